"""Untrusted files: weights only through safetensors, ONNX or ``torch.load(weights_only=True)``;
``trust_remote_code`` stays false unless set; tokens never appear in logs, outputs or error
messages (issue 14)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from test_reliability_checkpoints import _config

from robustdistill.redact import MASK, RedactingFilter, redact
from robustdistill.trainer import train
from robustdistill.upstream import Upstream

REPO = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_" + "Zq7" * 12  # shaped like a Hugging Face token; not a real one


def _sources() -> list[Path]:
    roots = [REPO / "robustdistill", REPO / "downstream", REPO / "scripts", REPO / "benchmarks"]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*.py"))


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call in ``text`` (balanced parentheses)."""
    found = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.end(): i - 1])
    return found


#: Calls that would unpickle arbitrary objects (accelerate loads the objects given to
#: ``register_for_checkpointing`` with ``weights_only=False``).
_UNSAFE = (r"\bpickle\.loads?\(", r"\bjoblib\.load\(", r"weights_only\s*=\s*False",
           r"allow_pickle\s*=\s*True", r"register_for_checkpointing\(", r"\bdill\.loads?\(")


def _code(path: Path) -> str:
    """The file without comments (a crude cut at ``#``: enough for these patterns)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def test_no_code_loads_a_pickle_that_could_hold_code():
    offenders = []
    for path in _sources():
        code = _code(path)
        for args in _calls(code, "torch.load"):
            if "weights_only=True" not in args:
                offenders.append(f"{path.relative_to(REPO)}: torch.load({args})")
        offenders += [f"{path.relative_to(REPO)}: {p}" for p in _UNSAFE if re.search(p, code)]
    assert not offenders, "\n".join(offenders)


def test_no_code_turns_trust_remote_code_on_by_itself():
    offenders = [str(p.relative_to(REPO)) for p in _sources()
                 if re.search(r"trust_remote_code\s*(:\s*bool\s*)?=\s*True", p.read_text())]
    assert not offenders
    from robustdistill.config import DistillConfig

    assert DistillConfig(teacher="x").trust_remote_code is False


def test_a_model_folder_with_custom_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil-audio", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        Upstream.from_pretrained(str(folder))
    assert not marker.exists()


def _custom_code_folder(tmp_path: Path, marker: Path) -> Path:
    """A model folder whose config names a model_type transformers does not know and, in its
    auto_map, the folder's own code (which writes ``marker`` if it ever runs)."""
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "my-wavlm-variant", "architectures": ["MyWavLMModel"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig",
                     "AutoModel": "modeling_my.MyWavLMModel",
                     "AutoFeatureExtractor": "modeling_my.MyExtractor"}}))
    for name in ("configuration_my.py", "modeling_my.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder


def test_a_model_folder_with_custom_code_is_said_to_be_one_not_unreadable(tmp_path):
    """It was "not a readable model folder (The repository ... contains custom code ...)"."""
    import transformers

    from robustdistill.speaker.cli import _check_model_folder
    from robustdistill.upstream import CustomCodeError

    marker = tmp_path / "code_ran"
    folder = _custom_code_folder(tmp_path, marker)
    with pytest.raises(CustomCodeError) as err:
        Upstream.from_pretrained(folder)
    assert str(err.value) == (
        f"{folder}: holds custom code: model_type 'my-wavlm-variant' is not known to "
        f"transformers {transformers.__version__}; its config.json's auto_map names "
        "configuration_my.MyConfig, modeling_my.MyWavLMModel, modeling_my.MyExtractor; "
        "robustdistill runs no model folder's own code (trust_remote_code is off)")
    assert err.value.has_code and "not a readable" not in str(err.value)
    with pytest.raises(ValueError, match=r"^student.upstream '.*custom' holds custom code: "
                                         r"model_type 'my-wavlm-variant' is not known"):
        _check_model_folder(str(folder), "student.upstream")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "config.json").write_text(json.dumps({"model_type": "wavlm-v9"}))
    with pytest.raises(CustomCodeError, match=r"newer: model_type 'wavlm-v9' is not known to "
                                              r"transformers .* \(a model of a newer "
                                              r"transformers, or of code of its own") as err:
        Upstream.from_pretrained(newer)
    assert not err.value.has_code
    assert not marker.exists()


def test_distill_student_init_and_create_student_name_custom_code_and_ask_nothing(
        tmp_path, tiny_wavlm_dir, monkeypatch, capsys):
    """``AutoModel.from_pretrained(student_init)`` left ``trust_remote_code`` at None, so
    transformers asked "Do you wish to run the custom code? [y/N]" on the terminal: a "y" ran
    the folder's code (so did ``train-speaker``'s check of ``student.upstream``)."""
    from conftest import tiny_run_config

    from robustdistill import cli
    from robustdistill.config import ConfigError, DistillConfig
    from robustdistill.speaker.cli import _check_model_folder
    from robustdistill.teachers import load_teacher

    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    marker = tmp_path / "code_ran"
    folder = _custom_code_folder(tmp_path, marker)
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", student_init=str(folder))
    with pytest.raises(ConfigError, match=r"^student_init .*custom: holds custom code: "
                                          r"model_type 'my-wavlm-variant'"):
        train(cfg)
    with pytest.raises(ValueError, match="holds custom code"):
        _check_model_folder(str(folder), "student.upstream")
    with pytest.raises(ConfigError, match=r"^teacher .*custom: holds custom code: .* \(allowed: "
                                          r"trust_remote_code: true, to run that code if you "
                                          r"trust it\)$"):
        load_teacher(DistillConfig(teacher=str(folder)))
    with pytest.raises(SystemExit) as stop:
        cli.main(["create-student", "--teacher", str(folder), "--out", str(tmp_path / "s")])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"robustdistill create-student: error: --teacher {folder}: holds "
                           "custom code: ")
    assert line.endswith("; --trust-remote-code runs that code, if you trust it")
    assert asked == [] and not marker.exists()


def test_redact_masks_env_tokens_token_shapes_and_url_passwords(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "s3cret-value-123")
    text = (f"auth failed for s3cret-value-123 with {FAKE_TOKEN} at "
            "https://alice:pa55word@example.org/x")
    assert redact(text) == f"auth failed for {MASK} with {MASK} at https://alice:{MASK}@example.org/x"
    assert redact("hf_short and plain text") == "hf_short and plain text"


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("robustdistill.test_redact")
    log.addHandler(handler)
    try:
        log.warning("token is %s", FAKE_TOKEN)
        try:
            raise RuntimeError(f"bad credentials {FAKE_TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    assert len(records) == 2 and all(FAKE_TOKEN not in r for r in records)
    assert records[0] == f"token is {MASK}" and "bad credentials ***" in records[1]


def test_library_log_handlers_and_warnings_are_redacted_too(tmp_path):
    """transformers, datasets and huggingface_hub print records through handlers of their own,
    before the root handlers; warnings.warn bypasses logging unless captured."""
    import subprocess
    import sys

    script = tmp_path / "leak.py"
    script.write_text(
        "import logging, warnings\n"
        "from robustdistill import cli\n"
        "cli._setup_logging()\n"
        "import os; tok = os.environ['HF_TOKEN']\n"
        "for name in ('datasets.builder', 'huggingface_hub.file_download',\n"
        "             'transformers.modeling_utils'):\n"
        "    logging.getLogger(name).error('%s: %s', name, tok)\n"
        "warnings.warn(f'warned {tok}')\n")
    env = {**__import__("os").environ, "HF_TOKEN": FAKE_TOKEN}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert FAKE_TOKEN not in output
    for name in ("datasets.builder", "huggingface_hub.file_download", "transformers",
                 "warned"):
        assert name in output  # each was printed, masked


@pytest.mark.slow
def test_a_run_with_a_token_in_the_environment_writes_it_nowhere(
        tmp_path, tiny_wavlm_dir, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    with caplog.at_level(logging.DEBUG):
        train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2, save_every=1,
                      export_student=True))
        cfg = _config(tmp_path, tiny_wavlm_dir, "hub", max_steps=1)
        cfg.teacher = "robustdistill-no-such-org/no-such-model"  # a hub id, offline
        # the offline hub's OSError from transformers (not any error before the teacher loads)
        with pytest.raises(OSError, match="huggingface.co") as info:
            train(cfg)
    assert FAKE_TOKEN not in str(info.value) and FAKE_TOKEN not in caplog.text
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


#: ``X.from_pretrained(...)`` calls that are not ``transformers``': this library's own classes,
#: which run no model folder's code.
_OWN_FROM_PRETRAINED = ("Upstream", "GRUMaskStudent", "SpeakerEmbedder", "cls")


def test_every_transformers_load_passes_trust_remote_code():
    """With ``trust_remote_code`` left at None, ``transformers`` asks "Do you wish to run the
    custom code? [y/N]" on the terminal for a folder of its own code (``publish/onnx.py``,
    ``publish/provenance.py``, ``export.py``, ``trainer_model.py`` and ``startup_checks.py``
    left it so)."""
    offenders = []
    for path in _sources():
        if path.name == "card_usage.py":  # the card's usage text, not a call
            continue
        code = _code(path)
        for match in re.finditer(r"(\w+)\.from_pretrained\(", code):
            if match.group(1) in _OWN_FROM_PRETRAINED:
                continue
            (args,) = _calls(code[match.start(1):], f"{match.group(1)}.from_pretrained")[:1]
            if "trust_remote_code" not in args:
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}{args})")
    assert not offenders, "\n".join(offenders)


def test_export_of_a_run_whose_student_init_holds_custom_code_is_one_line_and_asks_nothing(
        tmp_path, monkeypatch, capsys):
    """``export`` read ``RUN/student_init`` with ``AutoConfig.from_pretrained(init)``: for a
    folder of its own code transformers asked "[y/N]" on the terminal, and a "y" ran that
    code. Now one line (exit 2) saying the folder holds custom code; nothing asked or run."""
    from safetensors.torch import save_file

    from robustdistill import cli

    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    run.mkdir()
    _custom_code_folder(tmp_path, marker).rename(run / "student_init")
    (run / "checkpoints" / "checkpoint_1").mkdir(parents=True)
    import torch

    save_file({"student.model.w": torch.zeros(2)},
              str(run / "checkpoints" / "checkpoint_1" / "model.safetensors"))
    with pytest.raises(SystemExit) as stop:
        cli.main(["export", "--run", str(run), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"robustdistill export: error: {run / 'student_init'}: holds custom code: model_type "
        f"'my-wavlm-variant' is not known to transformers {__import__('transformers').__version__}"
        "; its config.json's auto_map names configuration_my.MyConfig, modeling_my.MyWavLMModel, "
        "modeling_my.MyExtractor; robustdistill runs no model folder's own code "
        "(trust_remote_code is off)")
    assert asked == [] and not marker.exists() and not (tmp_path / "out").exists()
