"""A shard cut short while it is mapped (another program truncates or rewrites it in
place: ``cp`` over it, ``rsync --inplace``, ``truncate``) is an error naming the file and
the record, for every reader that maps files, not a process killed by SIGBUS; a SIGBUS
that is not recordforge's still ends the process as before (``recordforge_core::Mapped``).

Each case runs in its own interpreter: a SIGBUS that is not handled would kill pytest."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import clean_env, run_file

_CUT = textwrap.dedent(
    """
    import os, sys, numpy as np, recordforge as rf
    out, mode = sys.argv[1], sys.argv[2]
    rf.write_dataset({"id": np.arange(20000), "pad": [b"x" * 200] * 20000}, out,
                     max_records=5000, index=True)
    ds = rf.open_dataset(out, on_corrupt="skip" if mode == "skip" else "raise")
    cut = ds.files[3]
    try:
        if mode == "getitem":
            assert int(ds[19999]["id"]) == 19999
            os.truncate(cut, 4096)
            ds[19998]
        elif mode == "take":
            assert ds.take([19999])["id"].tolist() == [19999]
            os.truncate(cut, 4096)
            ds.take([3, 19998, 15001])
        elif mode == "records":
            records = rf.read_records(cut)
            next(records)
            os.truncate(cut, 4096)
            for _ in records:
                pass
        else:  # batches: copied, as views (copy=False), skipping damage
            batches = ds.batches(64, threads=1, copy=mode != "views")
            next(batches)
            os.truncate(cut, 4096)
            for _ in batches:
                pass
        print("no error")
    except rf.CorruptRecordError as e:
        print("CorruptRecordError", os.path.basename(e.path), e.offset)
        print(e)
    """
)


@pytest.mark.parametrize("mode", ["getitem", "take", "records", "batches", "views", "skip"])
def test_a_shard_cut_while_mapped_is_an_error_naming_it_and_the_record(
    tmp_path: Path, mode: str
) -> None:
    script = tmp_path / "cut.py"
    script.write_text(_CUT)
    done = run_file(script, str(tmp_path / "d"), mode, env=clean_env(), timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    first, message = done.stdout.splitlines()[:2]
    name, offset = first.split()[1:]
    assert name == "train-00003-of-00004.tfrecord"
    assert "cut short while it was read" in message, message
    # The record named is one that the cut took (wholly or in part): one that ends past
    # byte 4096 (records of 215 bytes). With on_corrupt="skip" too: records lost by a
    # cut are not damage to skip.
    assert int(offset) > 4096 - 215


def test_the_cut_is_caught_with_faulthandler_on(tmp_path: Path) -> None:
    """Python's faulthandler (``-X faulthandler``, as pytest runs) installs its SIGBUS
    handler first: recordforge's, installed with its first map, takes the faults in its
    maps and hands the others on to it."""
    script = tmp_path / "cut.py"
    script.write_text(_CUT)
    done = run_file_with(["-X", "faulthandler"], script, str(tmp_path / "d"), "getitem")
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("CorruptRecordError train-00003-of-00004.tfrecord")
    assert "Fatal Python error" not in done.stderr


_FOREIGN = textwrap.dedent(
    """
    import mmap, os, sys, numpy as np, recordforge as rf
    out, other = sys.argv[1], sys.argv[2]
    rf.write_dataset({"id": np.arange(100)}, out, index=True)
    ds = rf.open_dataset(out)
    assert int(ds[5]["id"]) == 5  # recordforge's map, and its SIGBUS handler, are made
    with open(other, "wb") as f:
        f.write(b"y" * 65536)
    with open(other, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    os.truncate(other, 4096)
    print("read", m[40000], flush=True)  # not recordforge's map: SIGBUS as before
    """
)


@pytest.mark.parametrize("faulthandler", [False, True])
def test_a_sigbus_elsewhere_still_ends_the_process(tmp_path: Path, faulthandler: bool) -> None:
    script = tmp_path / "foreign.py"
    script.write_text(_FOREIGN)
    flags = ["-X", "faulthandler"] if faulthandler else []
    done = run_file_with(flags, script, str(tmp_path / "d"), str(tmp_path / "other"))
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr[-500:])
    assert "read" not in done.stdout
    if faulthandler:  # it still reports the fault, with the Python stack
        assert "Fatal Python error: Bus error" in done.stderr


def run_file_with(flags: list[str], script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The Python file ``script`` with interpreter ``flags``."""
    return subprocess.run(
        [sys.executable, *flags, str(script), *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


_HANDLER_AFTER = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, numpy as np, recordforge as rf
    out, mode, read = sys.argv[1], sys.argv[2], sys.argv[3]
    rf.write_dataset({"id": np.arange(20000), "pad": [b"x" * 200] * 20000}, out,
                     max_records=5000, index=True)
    ds = rf.open_dataset(out)
    assert int(ds[19999]["id"]) == 19999  # the first map: recordforge's handler
    if mode == "faulthandler":
        faulthandler.enable()
    else:  # a handler that returns from a fault would spin for ever on it
        signal.signal(signal.SIGBUS, lambda *a: print("python handler", flush=True))
    os.truncate(ds.files[3], 4096)
    try:
        if read == "take":
            ds.take([19998])
        else:
            for _ in ds.batches(64):
                pass
        print("no error")
    except rf.CorruptRecordError as e:
        print("CorruptRecordError", os.path.basename(e.path))
    """
)


@pytest.mark.parametrize("read", ["take", "batches"])
@pytest.mark.parametrize("mode", ["faulthandler", "python"])
def test_a_handler_set_after_the_first_map_gives_way_when_a_reader_starts(
    tmp_path: Path, mode: str, read: str
) -> None:
    """A SIGBUS handler set after recordforge's (a PyTorch DataLoader worker's,
    ``faulthandler.enable()``) is chained to when recordforge next maps a file or starts
    a reader: the cut is an error, and other faults still reach that handler."""
    script = tmp_path / "after.py"
    script.write_text(_HANDLER_AFTER)
    done = run_file_with([], script, str(tmp_path / "d"), mode, read)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert done.stdout.split() == ["CorruptRecordError", "train-00003-of-00004.tfrecord"]
    assert "Fatal Python error" not in done.stderr
