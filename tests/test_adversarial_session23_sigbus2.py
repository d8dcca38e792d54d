"""Second adversarial review of ``recordforge_core::Mapped`` (a shard cut short while it
is memory-mapped is a ``CorruptRecordError``, never a process killed by SIGBUS nor a
value read as zeros), after helper-40's review (tests/test_adversarial_session23_sigbus.py)
and its fixes: bytes read from a map after the cut was last asked for, a kept map whose
pages were zeroed, the framing walk of ``on_corrupt="skip"``, and the SIGBUS handler's
chaining (handlers that put back the one they replaced, that chain by calling it, that
reset themselves; a second copy of the handler; fork while it is being installed).

The bugs it found were fixed in the same session (values copied out of a map are asked
about the cut after the copy; a map that met a cut is not current; the walk of intact
records reports the cut; the handler runs with ``SA_NODEFER`` and a SIGBUS that comes
back while the handler before ours runs takes the default action; ``SA_RESETHAND``
resets the stored action, not the process's; the install is a try-lock a forked child
takes over), except two left as they are, ``xfail(strict=True)`` with the reason. Each
case runs in its own interpreter: an unhandled SIGBUS kills it, and some spin or hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import clean_env
from helpers import ok_lines as _ok
from helpers import run_code as _child

import recordforge


def _bounded(code: str, *args: str, timeout: float, stderr: Path) -> tuple[int | None, str]:
    """``code`` in a fresh interpreter, its stderr to the file ``stderr``, killed after
    ``timeout`` seconds: (exit status, None where it was killed; its stdout)."""
    with stderr.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            out, _ = child.communicate(timeout=timeout)
            return child.returncode, out
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
            return None, out


# -- bytes read from the map after the batch's check ---------------------------------------

_DECODED_AHEAD = """
import os, sys, time, numpy as np, recordforge as rf
out, on_corrupt, cut = sys.argv[1], sys.argv[2], sys.argv[3]
rf.write_dataset({"id": np.arange(16), "pad": [b"x" * 3000] * 16}, out, index=True)
ds = rf.open_dataset(out, on_corrupt=on_corrupt)
path = ds.files[0]
size = os.path.getsize(path)  # 48,784 bytes: records of 3,049 bytes
batches = ds.batches(8, threads=1)  # copy=True, the default (to_torch's too)
pads = [bytes(v) for v in next(batches)["pad"]]
time.sleep(0.5)  # the second batch (records 8-15) is decoded, and checked, ahead
# "pages": records 8-15 wholly past the new end (their pages fault); "tail": the last
# record loses its last 1,000 bytes, all in the page of the new end (no fault at all).
os.truncate(path, 4096 if cut == "pages" else size - 1000)
try:
    for b in batches:
        pads += [bytes(v) for v in b["pad"]]
    print("end")
except rf.CorruptRecordError as e:
    print("CorruptRecordError", "cut short" in e.reason)
print(sum(v != b"x" * 3000 for v in pads))
"""


@pytest.mark.parametrize(("on_corrupt", "cut"), [("raise", "pages"), ("skip", "tail")])
def test_a_batch_decoded_ahead_of_a_cut_hands_out_no_zeros(
    tmp_path: Path, on_corrupt: str, cut: str
) -> None:
    lines = _ok(_child(_DECODED_AHEAD, str(tmp_path / "d"), on_corrupt, cut))
    assert lines == ["CorruptRecordError True", "0"], lines


_TAKE_DURING = """
import os, sys, threading, numpy as np, recordforge as rf
out = sys.argv[1]
n = 3000
while True:  # the last record's end, and 104 bytes before it, in one page
    pads = [b"b" * (4 << 20)] * 16 + [b"r" * n]
    rf.write_dataset({"pad": pads}, out, index=True, overwrite=True)
    ds = rf.open_dataset(out)
    path = ds.files[0]
    end = os.path.getsize(path)
    if 600 <= end % 4096 <= 3500:
        break
    n += 1000
assert bytes(ds.take([16])["pad"][0]) == b"r" * n  # offsets and the map, made once
fd = os.open(path, os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the 64 MiB are read from disk
os.close(fd)

def faults():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[9])  # minflt + majflt

go, when = threading.Event(), []

def cutter():
    go.wait()  # then the GIL, which take lets go of to read: record 16 is checked first
    start = faults()
    for _ in range(200000):  # ... and the big records' pages are being read after it
        if faults() - start >= 64:
            break
    os.truncate(path, end - 104)  # record 16's last 100 payload bytes and its CRC
    when.append(len(done))

done = []
thread = threading.Thread(target=cutter)
thread.start()
sys.setswitchinterval(30)
go.set()
try:
    taken = ds.take([16] + list(range(16)))
    done.append(1)
    value = bytes(taken["pad"][0])
    print("took", len(value) == n, value.count(0))
except rf.CorruptRecordError as e:
    done.append(1)
    print("CorruptRecordError", e.offset > 16 * (4 << 20), "cut short" in e.reason)
thread.join()
print("cut after the take" if when == [1] else "cut during the take")
"""


def test_take_of_a_record_cut_after_its_crc_was_checked_hands_out_no_zeros(
    tmp_path: Path,
) -> None:
    lines = _ok(_child(_TAKE_DURING, str(tmp_path / "d"), timeout=120))
    if lines[-1] == "cut after the take":
        pytest.skip(f"the cut landed after the take: {lines}")
    assert lines[0] in ("CorruptRecordError True True", "took True 0"), lines


# -- a kept map whose pages were zeroed, its file restored as it was ----------------------

_RESTORED = """
import os, sys, numpy as np, recordforge as rf
out, on_corrupt = sys.argv[1], sys.argv[2]
rf.write_dataset({"id": np.arange(2000), "pad": [b"x" * 200] * 2000}, out, index=True)
ds = rf.open_dataset(out, on_corrupt=on_corrupt)
path = ds.files[0]
whole, stat = open(path, "rb").read(), os.stat(path)
batches = ds.batches(64, threads=1)  # maps the file, kept for the dataset's life
next(batches)
os.truncate(path, 4096)
try:
    for _ in batches:
        pass
except rf.CorruptRecordError as e:  # the fault mapped zero pages over the rest
    print("epoch 1:", "cut short" in e.reason)
with open(path, "r+b") as f:  # restored in place, its time too: cp -p, rsync -a --inplace
    f.seek(4096)
    f.write(whole[4096:])
os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
assert open(path, "rb").read() == whole
try:
    n = sum(len(b["id"]) for b in ds.batches(500))
    print("epoch 2:", n, len(ds.skipped))
except rf.CorruptRecordError as e:
    print("epoch 2: CorruptRecordError", e.reason.split(" (")[0])
print("new dataset:", sum(len(b["id"]) for b in rf.open_dataset(out).batches(500)))
"""


@pytest.mark.parametrize("on_corrupt", ["raise", "skip"])
def test_a_kept_map_that_met_a_cut_is_not_read_after_the_file_is_restored(
    tmp_path: Path, on_corrupt: str
) -> None:
    lines = _ok(_child(_RESTORED, str(tmp_path / "d"), on_corrupt))
    assert lines[0] == "epoch 1: True"
    assert lines[2] == "new dataset: 2000"  # the file is intact
    assert lines[1] == "epoch 2: 2000 0", lines


# -- the framing walk of on_corrupt="skip" ---------------------------------------------------

_INTACT = """
import os, sys, numpy as np, recordforge as rf
from recordforge import _core
out = sys.argv[1]
rf.write_dataset({"id": np.arange(2000), "pad": [b"x" * 200] * 2000}, out, index=True)
path = rf.open_dataset(out).files[0]
f = _core.RecordFile(path)
os.truncate(path, 4096)  # records 0-15 whole, 16 (at 3,984) cut in two
try:
    good, bad = f.intact()
    print("intact", len(good), len(bad), bad[0][2].split(": ", 1)[1])
except rf.CorruptRecordError as e:
    print("CorruptRecordError", e.offset, "cut short" in e.reason)
"""


def test_the_walk_of_intact_records_reports_a_cut(tmp_path: Path) -> None:
    lines = _ok(_child(_INTACT, str(tmp_path / "d")))
    assert lines == ["CorruptRecordError 3984 True"], lines


# -- the handler's chaining -----------------------------------------------------------------

_FAULTHANDLER_AFTER = """
import faulthandler, mmap, os, signal, sys, numpy as np, recordforge as rf
out, other, then, how = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rf.write_dataset({"id": np.arange(100)}, out, index=True)
ds = rf.open_dataset(out)
assert int(ds[5]["id"]) == 5  # recordforge's handler installed
faulthandler.enable()  # over it: faulthandler's "previous" is recordforge's handler
assert ds.take([7])["id"].tolist() == [7]  # a reader starts: recordforge's chains to it
if then == "disable":
    faulthandler.disable()  # puts back the one it replaced: recordforge's
print("ready", flush=True)
if how == "kill":
    os.kill(os.getpid(), signal.SIGBUS)
else:  # a fault in a map that is not recordforge's
    with open(other, "wb") as f:
        f.write(b"y" * 65536)
    with open(other, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    os.truncate(other, 4096)
    print("read", m[40000], flush=True)
print("alive", flush=True)
"""


def _reports(stderr: Path) -> int:
    with stderr.open("rb") as f:
        return f.read(1 << 20).count(b"Fatal Python error: Bus error")


@pytest.mark.parametrize("how", ["kill", "fault"])
def test_a_sigbus_with_faulthandler_enabled_after_the_first_map_ends_the_process(
    tmp_path: Path, how: str
) -> None:
    """A SIGBUS sent (kill) or a fault outside recordforge's maps goes to faulthandler,
    enabled after recordforge's first map and chained to at the next reader: one report,
    then its raise comes back to recordforge's handler while faulthandler's runs
    (CHAINING) and takes the default action: no loop."""
    err = tmp_path / "stderr"
    code, out = _bounded(
        _FAULTHANDLER_AFTER,
        str(tmp_path / "d"),
        str(tmp_path / "o"),
        "on",
        how,
        timeout=30,
        stderr=err,
    )
    assert out.split() == ["ready"]
    assert (code, _reports(err)) == (-signal.SIGBUS, 1)


@pytest.mark.xfail(
    strict=True,
    reason="left as it is: PREVIOUS is stale once the handler that took recordforge's "
    "place puts it back (faulthandler.disable() after a reader re-installed recordforge's "
    "over it): a SIGBUS sent goes to faulthandler's disabled handler, which returns at once "
    "(the process lives on), and a fault outside recordforge's maps returns to the fault "
    "for ever; recordforge cannot tell a handler that was disabled",
)
@pytest.mark.parametrize("how", ["kill", "fault"])
def test_a_sigbus_after_faulthandler_was_enabled_and_disabled_ends_the_process(
    tmp_path: Path, how: str
) -> None:
    err = tmp_path / "stderr"
    code, out = _bounded(
        _FAULTHANDLER_AFTER,
        str(tmp_path / "d"),
        str(tmp_path / "o"),
        "disable",
        how,
        timeout=4,
        stderr=err,
    )
    assert out.split() == ["ready"]
    assert code == -signal.SIGBUS


_RESETHAND = """
import ctypes, os, signal, sys, numpy as np, recordforge as rf
out = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)

class Sigaction(ctypes.Structure):  # glibc's struct sigaction on Linux
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

action = Sigaction()
action.handler = ctypes.cast(libc.getpid, ctypes.c_void_p).value  # returns at once
action.flags = ctypes.c_int(0x80000000).value  # SA_RESETHAND: used once, then SIG_DFL
assert libc.sigaction(signal.SIGBUS, ctypes.byref(action), None) == 0
rf.write_dataset({"id": np.arange(5000), "pad": [b"x" * 200] * 5000}, out, index=True)
ds = rf.open_dataset(out)
assert int(ds[4999]["id"]) == 4999  # recordforge's handler, over that one
signal.raise_signal(signal.SIGBUS)  # sent: to the handler before, which returns
print("alive", flush=True)
os.truncate(ds.files[0], 4096)
try:
    ds[4998]
    print("no error")
except rf.CorruptRecordError as e:
    print("CorruptRecordError", e.offset)
"""


def test_a_previous_handler_with_sa_resethand_does_not_remove_recordforges(
    tmp_path: Path,
) -> None:
    lines = _ok(_child(_RESETHAND, str(tmp_path / "d")))
    assert lines == ["alive", "CorruptRecordError 1249372"]


# A second copy of the extension (its own table, PREVIOUS and PASSED_ON): a handler that
# recovers from faults in its own maps and chains by calling the one before it, as
# recordforge's does (as do those of the JVM, sanitizers, crash reporters).
_TWO_COPIES = """
import importlib.util, os, signal, sys, recordforge as rf
from recordforge import _core as first
d, copy, mode = sys.argv[1], sys.argv[2], sys.argv[3]
spec = importlib.util.spec_from_file_location("_core", copy)
second = importlib.util.module_from_spec(spec)
spec.loader.exec_module(second)
fa, fb = os.path.join(d, "a.tfrecord"), os.path.join(d, "b.tfrecord")
for path in (fa, fb):
    with rf.TFRecordWriter(path) as w:
        w.write_many([b"a" * 5000, b"b" * 5000])  # record 1 from byte 5016: page 2
signal.signal(signal.SIGBUS, lambda *a: print("python handler", flush=True))
a = first.read_records(fa, "auto", True)  # the first copy's handler, over Python's
assert next(a) == b"a" * 5000
b = second.read_records(fb, "auto", True)  # the second copy's, over the first's
assert next(b) == b"a" * 5000
if mode == "recovered":  # a fault in the first copy's map: through the second's handler
    os.truncate(fa, 4096)
    try:
        next(a)
    except rf.CorruptRecordError as e:
        print("CorruptRecordError", e.offset)
else:  # the first copy maps again: installed over the second's, chained to it
    again = first.read_records(fa, "auto", True)
    assert next(again) == b"a" * 5000
    print("mapped")
signal.raise_signal(signal.SIGBUS)  # sent: Python's handler's, as before any of these
print("alive", flush=True)
"""


@pytest.mark.parametrize(
    "mode",
    [
        "recovered",
        pytest.param(
            "again",
            marks=pytest.mark.xfail(
                strict=True,
                reason="left as it is: reinstall() over a handler that chains by calling "
                "recordforge's (PREVIOUS = that handler, whose previous is recordforge's) is "
                "a cycle; a SIGBUS sent now ends it with the default action (it recursed "
                "until the stack overflowed), not with the Python handler further back",
            ),
        ),
    ],
)
def test_a_handler_chaining_like_recordforges_keeps_sent_signals_going_to_python(
    tmp_path: Path, mode: str
) -> None:
    copy = tmp_path / "second" / Path(recordforge._core.__file__).name
    copy.parent.mkdir()
    shutil.copyfile(recordforge._core.__file__, copy)
    p = _child(_TWO_COPIES, str(tmp_path), str(copy), mode)
    first = "CorruptRecordError 5016" if mode == "recovered" else "mapped"
    assert p.stdout.splitlines()[:1] == [first], p.stderr[-500:]
    assert (p.returncode, p.stdout.splitlines()[1:]) == (0, ["python handler", "alive"])


# -- fork while the handler is being installed ----------------------------------------------

# sigaction(SIGBUS, NULL, &old) made slow on threads other than the process's first one:
# the window in which recordforge::mapped::guard::reinstall holds INSTALLING, widened.
_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    static int (*real)(int, const struct sigaction *, struct sigaction *);
    if (!real)
        real = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(
            RTLD_NEXT, "sigaction");
    if (sig == SIGBUS && act == NULL && syscall(SYS_gettid) != getpid())
        usleep(400000);
    return real(sig, act, old);
}
"""

_FORK = """
import os, signal, sys, threading, time, recordforge as rf
from recordforge import _core
d = sys.argv[1]
paths = [os.path.join(d, f"f{i}.tfrecord") for i in range(2)]
for path in paths:
    with rf.TFRecordWriter(path) as w:
        w.write(b"r" * 100)
_core.RecordFile(paths[0])  # the handler installed, on the main thread
# A map made on another thread, the GIL let go (as the batch reader's loader threads
# map files): reinstall() holds its mutex while it asks for SIGBUS's action.
thread = threading.Thread(target=_core.RecordFile, args=(paths[0],))
thread.start()
time.sleep(0.1)
pid = os.fork()  # a DataLoader worker, say
if pid == 0:
    signal.alarm(3)
    _core.RecordFile(paths[1])  # the child's first map
    os._exit(0)
thread.join()
_, status = os.waitpid(pid, 0)
print("exit %d" % os.WEXITSTATUS(status) if os.WIFEXITED(status) else
      "signal %d" % os.WTERMSIG(status))
"""


def test_a_child_forked_while_another_thread_maps_a_file_can_map(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the sigaction shim")
    (tmp_path / "shim.c").write_text(_SHIM)
    shim = tmp_path / "shim.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-ldl"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    lines = _ok(_child(_FORK, str(tmp_path), env=clean_env(LD_PRELOAD=str(shim))))
    assert lines == ["exit 0"]


# -- no false alarms -------------------------------------------------------------------------

_GROWN = """
import itertools, os, sys, numpy as np, recordforge as rf
out = sys.argv[1]
rf.write_dataset({"id": np.arange(6000), "pad": [b"x" * 200] * 6000}, out,
                 max_records=3000, index=True)
ds = rf.open_dataset(out)
paths = ds.files
with rf.TFRecordWriter(out + "-tail.tfrecord") as w:
    w.write_many(list(itertools.islice(rf.read_records(paths[1]), 100)))
tail = open(out + "-tail.tfrecord", "rb").read()  # 100 records
def grow(path):  # records appended while the file is mapped
    with open(path, "ab") as f:
        f.write(tail)
def attempt(read):
    try:
        return read()
    except rf.RecordforgeError as e:
        return "cut" if "cut short" in str(e) else "other"
assert int(ds[10]["id"]) == 10 and int(ds[5999]["id"]) == 5999  # both files mapped
batches = ds.shuffle(512, seed=1).batches(64, threads=2)
n = len(next(batches)["id"])
grow(paths[0])
grow(paths[1])
print("batches", attempt(lambda: n + sum(len(b["id"]) for b in batches)))
print("getitem", attempt(lambda: int(ds[5999]["id"])), attempt(lambda: int(ds[2999]["id"])))
print("take", attempt(lambda: ds.take([2999, 5999])["id"].tolist()))
for verify in (False, True):
    records = rf.read_records(paths[1], verify=verify)  # mapped at 3,100, then 3,200
    next(records)
    grow(paths[1])
    print("records", verify, attempt(lambda: 1 + sum(1 for _ in records)))
print("scan", attempt(lambda: rf.scan_records(paths[1]).records))
"""


def test_a_file_grown_while_mapped_is_not_taken_for_cut(tmp_path: Path) -> None:
    """Held: records appended while a file is mapped read as the file was when mapped;
    no read says it was cut (the batch reader's count check after the epoch may say
    the file changed: 'other')."""
    lines = _ok(_child(_GROWN, str(tmp_path / "d")))
    assert lines[0] in ("batches 6000", "batches other"), lines
    assert lines[1:] == [
        "getitem 5999 2999",
        "take [2999, 5999]",
        "records False 3100",
        "records True 3200",
        "scan 3300",
    ]


_RENAMED = """
import os, sys, numpy as np, recordforge as rf
out = sys.argv[1]
rf.write_dataset({"id": np.arange(6000), "pad": [b"x" * 200] * 6000}, out,
                 max_records=3000, index=True)
ds = rf.open_dataset(out)
assert int(ds[10]["id"]) == 10 and int(ds[5999]["id"]) == 5999  # both files mapped
batches = ds.batches(64, threads=1)
ids = list(next(batches)["id"])
for path in ds.files:  # replaced by rename (as convert does), then the new file cut
    with open(path + ".new", "wb") as f:
        f.write(open(path, "rb").read())
    os.replace(path + ".new", path)
    os.truncate(path, 4096)
ids += [i for b in batches for i in b["id"]]
print(sorted(ids) == list(range(6000)), int(ds[5999]["id"]), ds.take([4000])["id"].tolist())
"""


def test_a_file_replaced_by_rename_while_read_is_not_taken_for_cut(tmp_path: Path) -> None:
    """Held: the maps are of the files replaced; the new file at the path, cut, is not
    theirs (the fstat is of the open file)."""
    assert _ok(_child(_RENAMED, str(tmp_path / "d"))) == ["True 5999 [4000]"]


_SHM = """
import os, sys, numpy as np, recordforge as rf
out = sys.argv[1]
rf.write_dataset({"id": np.arange(5000), "pad": [b"x" * 200] * 5000}, out, index=True)
ds = rf.open_dataset(out)
assert int(ds[4999]["id"]) == 4999
os.truncate(ds.files[0], 4096)
try:
    ds[4998]
except rf.CorruptRecordError as e:
    print("CorruptRecordError", e.offset, "cut short" in e.reason)
"""


def test_a_shard_on_tmpfs_cut_while_mapped_is_the_error(tmp_path: Path) -> None:
    """Held: /dev/shm (tmpfs, shmem faults) gives BUS_ADRERR as disk files do."""
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    out = Path("/dev/shm") / f"rf-sigbus2-{os.getpid()}-{tmp_path.name}"
    try:
        assert _ok(_child(_SHM, str(out))) == ["CorruptRecordError 1249372 True"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
