"""``robustdistill.messages.first_line``: the one-line reason the commands print."""

from __future__ import annotations

from robustdistill.messages import first_line


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_first_line_keeps_the_first_non_blank_line_only():
    assert first_line(RuntimeError("\n  shape mismatch\nsize 3 vs 4\n")) == "shape mismatch"
    assert first_line(KeyError(101)) == "101"


def test_an_empty_message_is_empty_and_a_broken_one_is_the_type_name():
    assert first_line(RuntimeError()) == ""
    assert (first_line(EOFError()) or type(EOFError()).__name__) == "EOFError"
    assert first_line(_Unprintable()) == "_Unprintable"
