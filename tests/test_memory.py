"""robustdistill.memory: freed heap pages given back to the system (glibc's malloc_trim), a
no-op where the C library is not glibc."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from robustdistill import memory

_GLIBC = memory._malloc_trim() is not None

# 800 blocks of 100 KB (under glibc's 128 KB mmap threshold: on the heap), each followed by a
# small block that stays allocated, so that freeing the large ones leaves holes the heap
# cannot shrink past; VmRSS (MB) after freeing them, then after release_free_heap()
_FRAGMENT = textwrap.dedent("""
    import sys
    from robustdistill.memory import release_free_heap

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    big, pins = [], []
    for _ in range(800):
        big.append(b"x" * 100_000)
        pins.append(b"y" * 1_000)
    held = rss()
    del big
    freed = rss()
    trimmed = release_free_heap()
    print(held, freed, rss(), trimmed)
""")


@pytest.mark.skipif(not _GLIBC or sys.platform != "linux", reason="needs Linux with glibc")
def test_release_free_heap_gives_freed_heap_pages_back():
    """80 MB of 100 KB blocks freed between blocks still held: about 38 MB stay resident
    (glibc 2.36: 87.4 MB held, 49.4 MB after the free), and the resident set falls by more
    than 25 MB more once the free pages are given back (to 11.1 MB)."""
    out = subprocess.run([sys.executable, "-P", "-c", _FRAGMENT], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": ":".join(sys.path)})
    held, freed, trimmed, called = out.stdout.split()
    held, freed, trimmed = float(held), float(freed), float(trimmed)
    assert called == "True"
    assert held - trimmed > 60, (held, trimmed)
    assert freed - trimmed > 25, (freed, trimmed)


# a HeapTrimmer(16 MB) called once before, then after the same 80 MB are freed, then again
# with nothing more grown; and one of 1 GB, which does not trim those 80 MB
_FRAGMENT_TRIMMER = _FRAGMENT.replace("""big, pins = [], []""", """from robustdistill.memory import HeapTrimmer, anonymous_resident_bytes
trimmer = HeapTrimmer(int(sys.argv[1]) << 20)
first = trimmer.release()
big, pins = [], []""").replace("""trimmed = release_free_heap()
print(held, freed, rss(), trimmed)""", """grown = (anonymous_resident_bytes() - trimmer._after_trim) / 2**20
trimmed = trimmer.release()
print(first, freed, grown, trimmed, rss(), trimmer.release())""")
assert _FRAGMENT_TRIMMER.count("trimmer.release()") == 3


@pytest.mark.skipif(not _GLIBC or sys.platform != "linux", reason="needs Linux with glibc")
@pytest.mark.parametrize("min_growth_mb", [16, 1024])
def test_heap_trimmer_trims_once_the_resident_memory_grew_by_its_threshold(min_growth_mb):
    """80 MB of 100 KB blocks freed between blocks still held (about 38 MB of them stay
    resident, as above): a HeapTrimmer trims at its first call, then once the anonymous
    resident memory grew by its threshold since that trim (16 MB: trimmed, 25 MB or more less
    resident; 1 GB: not, the same resident set), and not again while it does not grow."""
    out = subprocess.run([sys.executable, "-P", "-c", _FRAGMENT_TRIMMER, str(min_growth_mb)],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(sys.path)})
    first, freed, grown, trimmed, after, again = out.stdout.split()
    assert (first, again) == ("True", "False")
    assert float(grown) > 30, grown
    if min_growth_mb == 16:
        assert trimmed == "True" and float(freed) - float(after) > 25, (freed, after)
    else:
        assert trimmed == "False" and abs(float(freed) - float(after)) < 2, (freed, after)


def test_heap_trimmer_trims_where_the_resident_memory_is_unknown(monkeypatch):
    """Without /proc/self/status (not Linux, where the trim itself is a no-op) the growth is
    unknown: each call trims, as release_free_heap would."""
    calls = []
    monkeypatch.setattr(memory, "release_free_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(memory, "anonymous_resident_bytes", lambda: None)
    trimmer = memory.HeapTrimmer(1 << 30)
    assert (trimmer.release(), trimmer.release(), len(calls)) == (True, True, 2)


def test_anonymous_resident_bytes_counts_touched_memory():
    """64 MB written in a fresh bytearray raise RssAnon by 60-70 MB; freed (one block above
    glibc's mmap threshold: unmapped), it falls back."""
    before = memory.anonymous_resident_bytes()
    if before is None:
        pytest.skip("no RssAnon in /proc/self/status (not Linux)")
    block = bytearray(b"x" * (64 << 20))
    grown = memory.anonymous_resident_bytes() - before
    del block
    assert 60 << 20 < grown < 70 << 20, grown / 2**20
    assert memory.anonymous_resident_bytes() - before < 4 << 20


class _Musl:
    """What ``ctypes.CDLL("libc.so.6")`` gives on musl: its loader resolves any ``libc.*``
    name to musl itself (``ldso/dynlink.c``, ``load_library``'s reserved names), and musl has
    no ``malloc_trim``."""

    def __getattr__(self, name):
        raise AttributeError(f"undefined symbol: {name}")


def _no_libc_so_6(name):  # macOS, Windows: no such library
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize("cdll", [_no_libc_so_6, lambda name: _Musl()],
                         ids=["no libc.so.6 (macOS, Windows)", "no malloc_trim (musl)"])
def test_release_free_heap_is_a_no_op_without_glibc(monkeypatch, cdll):
    """No libc.so.6, or one without malloc_trim: nothing done, False, no error."""
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    memory._malloc_trim.cache_clear()
    try:
        assert memory.release_free_heap() is False
    finally:
        memory._malloc_trim.cache_clear()
