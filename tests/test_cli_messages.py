"""The top-level command's help and errors: help on stdout, unknown commands named, and an
unreachable Hugging Face Hub as one line with what to do."""

from __future__ import annotations

import pytest

from robustdistill import cli

HUB_DOWN = ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
            "find them in the cached files.\nCheck your internet connection or see ...")


def test_help_goes_to_stdout_and_an_unknown_command_is_named(capsys):
    assert cli.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert "robustdistill distill --config" in out and err == ""
    assert cli.main(["distil"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("robustdistill: unknown command 'distil'\n")
    assert cli.main([]) == 2


def test_hub_error_is_one_line_and_only_for_the_hub():
    message = cli.hub_error(OSError(HUB_DOWN))
    assert "\n" not in message
    assert message.startswith("We couldn't connect to 'https://huggingface.co'")
    assert "HF_HUB_OFFLINE=1" in message and "local folder" in message
    assert cli.hub_error(OSError("No space left on device")) is None


def test_create_student_with_an_unreachable_hub_id_exits_with_one_line(
        tmp_path, monkeypatch, capsys):
    from robustdistill.upstream import Upstream

    def offline(*args, **kwargs):
        raise OSError(HUB_DOWN)

    monkeypatch.setattr(Upstream, "from_pretrained", offline)
    with pytest.raises(SystemExit) as stop:
        cli.main(["create-student", "--teacher", "org/model", "--out", str(tmp_path / "s")])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("robustdistill create-student: error: We couldn't connect")

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Upstream, "from_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):  # not a Hub problem: the traceback
        cli.main(["create-student", "--teacher", "org/model", "--out", str(tmp_path / "s")])


def test_create_student_help_names_the_families_and_each_shape_option(capsys):
    """``--family`` used to show no values (a wrong one was refused only after the teacher
    loaded); every shape option now has its StudentConfig help."""
    with pytest.raises(SystemExit):
        cli.main(["create-student", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--family {hubert,wavlm,wav2vec2,data2vec-audio}" in text
    for option, described in (("--num-layers", "transformer layers of the student"),
                              ("--hidden-size", "student width; default the teacher's")):
        assert f"{option.upper().lstrip('-').replace('-', '_')} {described}" in text, option
    assert "[INIT_LAYERS ...] teacher layers (0-based) copied" in text
    with pytest.raises(SystemExit):
        cli.main(["create-student", "--teacher", "t", "--out", "o", "--family", "wavlmm"])
    assert "invalid choice: 'wavlmm'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [*cli.COMMANDS, "se.table"])
def test_every_option_of_a_subcommand_has_help_with_one_default(monkeypatch, command):
    """``--help`` of each subcommand (and of ``python -m robustdistill.se.table``) says what
    every option does (``card --kind``, ``push --commit-message``, ``cache-teacher --splits``,
    ``create-student --trust-remote-code`` and ``train-speaker --config`` showed a bare
    name), and says its default once: a help that states a default gets no second one from an
    ``ArgumentDefaultsHelpFormatter`` (``se.table --snrs`` read "(default -5 0 5; ...)
    (default: None)")."""
    import argparse
    import importlib

    class Parsed(Exception):
        pass

    parsers = []

    def capture(self, *args, **kwargs):
        parsers.append(self)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Parsed):
        if command == "se.table":
            importlib.import_module("robustdistill.se.table").main(["--help"])
        else:
            cli.main([command, "--help"])
    options = [a for a in parsers[0]._actions if a.option_strings and a.help != argparse.SUPPRESS]
    bare = [a.option_strings[0] for a in options if a.help is None]
    assert bare == [], f"{command}: no help for {bare}"
    formatter = parsers[0]._get_formatter()  # what --help shows: a default added, or not
    doubled = [a.option_strings[0] for a in options
               if "default" in a.help.lower() and "%(default)" not in a.help
               and "%(default)" in formatter._get_help_string(a)]
    assert doubled == [], f"{command}: two defaults in the help of {doubled}"
