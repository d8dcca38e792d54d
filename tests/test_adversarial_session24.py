"""Adversarial review of 22be8cc (a rest of a chunk next in line waits for the writes
in flight, then goes to the worker holding least), fc0a135 (a CSV's type inference
reads its first two blocks, ``csv_head``) and e09d3be (the command's cycle collector:
off while its modules load, frozen and on again before the subcommand runs).

The invariants: the files are one worker's, byte for byte, for any number of workers,
with no hang and each worker within its byte bound; the inference from two blocks is
the inference from the whole stream, for every CSV, and a conversion keeps every row;
the collector is on while any subcommand runs, in every process of the command however
it is launched, and a program importing recordforge keeps its collector as it is."""

from __future__ import annotations

import bz2
import gzip
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, held_records, run_code

import recordforge as rf
from recordforge import _parallel
from recordforge.sources import table as table_module
from recordforge.sources.table import TableSource

pytest.importorskip("pyarrow")

MB = 1 << 20
TIMEOUT = 25


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# -- 1. 22be8cc: a rest next in line waits for the writes in flight ---------------------------


def _sizes(pattern: str, item: int) -> list[int]:
    if pattern == "grow":  # 10 bytes doubling every 3 items, up to 5 MB
        return [min(10 << (item // 3), 5 * MB)]
    if pattern == "just_under":  # a record just under CHUNK_BYTES every third item
        return [_parallel.CHUNK_BYTES - 64 if item % 3 == 0 else 100]
    if pattern == "alternate":  # 3 and 7 MB: every chunk stops after two items
        return [7 * MB if item % 2 else 3 * MB]
    if pattern == "burst":  # three 5 MB records every tenth item, one tiny one always
        return [5 * MB] * (3 if item % 10 == 9 else 0) + [10]
    return [(item % 17) * 700_000]  # "saw": 0 to 11 MB


def _records(pattern: str) -> Callable[[int], list[bytes]]:
    def to_records(item: int) -> list[bytes]:
        return [
            rf.encode_example({"i": item, "x": bytes([item % 251]) * size})
            for size in _sizes(pattern, item)
        ]

    return to_records


@pytest.mark.parametrize(
    ("pattern", "items", "kw"),
    [
        ("grow", 60, {"max_records": 7, "compression": "gzip"}),
        ("just_under", 24, {"max_records": 3}),
        ("alternate", 24, {"max_bytes": 20_000_000, "checksum": "sha256"}),
        ("burst", 120, {"max_records": 5, "index": True, "compression": "zlib"}),
        ("saw", 60, {"max_records": 4, "checksum": "crc32c"}),
    ],
)
def test_chains_of_rests_write_one_workers_files(
    tmp_path: Path, pattern: str, items: int, kw: dict[str, Any]
) -> None:
    outs = {}
    for w in (1, 2, 3):
        out = tmp_path / f"w{w}"
        rf.write_dataset(iter(range(items)), out, to_records=_records(pattern), workers=w, **kw)
        outs[w] = listing(out)
    assert outs[2] == outs[1] and outs[3] == outs[1]
    assert rf.inspect.verify(tmp_path / "w3").ok


@pytest.mark.parametrize("pattern", ["just_under", "alternate", "saw"])
def test_forced_rests_keep_each_worker_within_its_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    peak = held_records(monkeypatch)
    rf.write_dataset(
        iter(range(40)), tmp_path / "o", to_records=_records(pattern), workers=2, max_records=3
    )
    largest = max(sum(_sizes(pattern, i)) for i in range(40)) + 1024
    bound = _parallel.HELD_CHUNKS * (_parallel.CHUNK_BYTES + largest)
    assert max(peak["bytes"].values()) <= bound, peak
    assert max(peak["chunks"].values()) <= _parallel.MOST_HELD, peak


def test_a_rest_whose_chunk_was_spilled_does_not_wait_for_ever(tmp_path: Path) -> None:
    """Compressed: chunks spill to files and are never placed (placing stays 0); a rest
    next in line with every worker full must still be given, in a child that would hang."""
    script = tmp_path / "spill.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import recordforge as rf
            MB = 1 << 20
            def to_records(item):
                size = 7 * MB if item % 2 else 3 * MB
                return [rf.encode_example({"x": bytes([item % 251]) * size})]
            rf.write_dataset(iter(range(30)), sys.argv[1], to_records=to_records,
                             workers=2, max_records=2, compression="gzip")
            print("done")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "o")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
    assert rf.inspect.verify(tmp_path / "o").ok


KILL_SCRIPT = """
import sys
import recordforge as rf

MB = 1 << 20

def to_records(item):
    size = [7 * MB, 3 * MB, 10][item % 3]
    return [rf.encode_example({"x": bytes([item % 251]) * size})]

out, workers, compression = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
rf.write_dataset(iter(range(60)), out, to_records=to_records, workers=workers,
                 max_records=4, compression=compression, checksum="sha256")
"""


@pytest.mark.parametrize("at", [17, 44])
@pytest.mark.parametrize("compression", ["", "gzip"])
def test_a_worker_killed_while_rests_wait_fails_then_resumes_to_one_workers_files(
    tmp_path: Path, at: int, compression: str
) -> None:
    """Every chunk stops after a 7 MB and a 3 MB record: a chain of rests, each waiting
    for the writes in flight; a worker killed there is an error (no hang), and a rerun
    with another number of workers gives one worker's files."""
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))

    def run(out: Path, workers: int, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), str(out), str(workers), compression],
            env=clean_env(**extra),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    assert run(tmp_path / "w1", 1).returncode == 0
    killed = run(tmp_path / "k", 3, RECORDFORGE_KILL_WORKER_AT=str(at))
    assert killed.returncode != 0 and "a worker process died" in killed.stderr, killed.stderr
    again = run(tmp_path / "k", 2)
    assert again.returncode == 0, again.stderr[-2000:]
    assert listing(tmp_path / "k") == listing(tmp_path / "w1")


# -- 2. fc0a135: a CSV's inference from its first two blocks -----------------------------------

BLOCK = 256


def _inferred(path: str, monkeypatch: pytest.MonkeyPatch, head: bool, **kw: Any) -> Any:
    """The plan's schema and Arrow schema from csv_head's stream (``head``) or from the
    file's whole stream (the read before fc0a135), or the error's words."""
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    original = table_module.TableSource._arrow_batches

    def batches(self: TableSource, *a: Any, **k: Any) -> Any:
        if not head:
            k["head"] = False
        return original(self, *a, **k)

    monkeypatch.setattr(table_module.TableSource, "_arrow_batches", batches)
    try:
        schema, types, arrow_schema = TableSource(path, **kw)._plan()
        return repr(schema), str(types), str(arrow_schema)
    except rf.RecordforgeError as e:
        return "error", str(e)
    finally:
        monkeypatch.undo()


def _same(path: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Any:
    new = _inferred(path, monkeypatch, True, **kw)
    assert new == _inferred(path, monkeypatch, False, **kw)
    return new


def _rows(n: int, nl: str = "\n", delimiter: str = ",") -> str:
    return "".join(delimiter.join((str(i), f"w{i}", f"{i / 4}")) + nl for i in range(n))


def _csvs() -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """CSVs whose first rows sit where the two blocks cut them."""
    yield "crlf_quoted", ('a,b,c\r\n0,"x\r\ny",1.5\r\n' + _rows(200, "\r\n")).encode(), {}
    yield "cr_only", ("a,b,c\r" + _rows(200, "\r")).encode(), {}
    yield "cr_only_quoted_cr", ('a,b,c\r1,"p\rq",2\r' + _rows(200, "\r")).encode(), {}
    yield "bom_skip", ("\ufeff#x\r\n#y\ra,b,c\n" + _rows(200)).encode(), {"skip_rows": 2}
    yield "skip_quotes", ('"a\n"b\n"\na,b,c\n' + _rows(200)).encode(), {"skip_rows": 3}
    yield "tab", ("a\tb\tc\n" + _rows(200, delimiter="\t")).encode(), {"delimiter": "\t"}
    yield "semicolon", ("a;b;c\n" + _rows(200, delimiter=";")).encode(), {"delimiter": ";"}
    yield "names", _rows(200).encode(), {"column_names": ["a", "b", "c"]}
    yield "nulls", ("a,b,c\nNA,,-\n" + _rows(200)).encode(), {"null_values": ["-", "NA"]}
    yield "empty_lines", ("\n\na,b,c\n\n\n" + "\n".join(_rows(100).split("\n"))).encode(), {}
    # the header + first row end at the first block's last byte, and one byte either side
    for shift in (-1, 0, 1):
        first = "0,w0," + "1" * (BLOCK - len("a,b,c\n0,w0,\n") + shift) + "\n"
        yield f"edge{shift}", ("a,b,c\n" + first + _rows(200)).encode(), {}
    # a file of two blocks exactly, and one byte more (later rows floats: types differ)
    for extra in (0, 1):
        body = "a,b\n" + "".join(f"{i},{i}\n" for i in range(40))
        body += "9,9.5\n" * ((2 * BLOCK - len(body)) // 6)
        body += "x" * (2 * BLOCK + extra - len(body) - 4) + ",1\n"
        body = body[: 2 * BLOCK + extra - 1] + "\n"
        yield f"two_blocks{extra}", body.encode(), {}
    # a first row longer than two blocks (a quoted value with line ends): block growth
    long = '"' + "line\n" * (3 * BLOCK // 5) + '"'
    yield "first_row_past_two_blocks", ("n,s\n0," + long + "\n" + _rows(300)).encode(), {}
    # the first block's only line end is inside a quoted value that ends in block 3
    value = '"' + "y" * (BLOCK - 12) + "\n" + "z" * (2 * BLOCK) + '"'
    yield "quote_into_block3", ("n,s\n0," + value + "\n1,2\n" + "3,4\n" * 300).encode(), {}
    # unbalanced quote in an unquoted field: pyarrow takes it as text
    yield "mid_quote", ('a,b\nx"y,1\n' + "".join(f'{i},"{i}"\n' for i in range(300))).encode(), {}


CSVS = list(_csvs())


@pytest.mark.parametrize("codec", ["", ".gz", ".bz2"])
@pytest.mark.parametrize(("name", "data", "kw"), CSVS, ids=[c[0] for c in CSVS])
def test_the_two_block_inference_is_the_whole_streams(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    data: bytes,
    kw: dict[str, Any],
    codec: str,
) -> None:
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "": bytes,
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
    }
    compress = compressors[codec]
    path = tmp_path / f"{name}.csv{codec}"
    path.write_bytes(compress(data))
    _same(str(path), monkeypatch, **kw)


GIVEN = [c for c in CSVS if c[0] not in ("mid_quote",) and not c[0].startswith(("first", "quote"))]


@pytest.mark.parametrize(("name", "data", "kw"), GIVEN, ids=[c[0] for c in GIVEN])
def test_a_given_schemas_arrow_schema_is_the_whole_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, kw: dict[str, Any]
) -> None:
    path = tmp_path / f"{name}.csv.gz"
    path.write_bytes(gzip.compress(data))
    column = "a" if name.startswith(("two_blocks", "names")) else "b"
    given = rf.Schema({column: rf.FeatureSpec(dtype="string")})
    assert _same(str(path), monkeypatch, schema=given, **kw)[0] != "error"


@pytest.mark.parametrize(("name", "data", "kw"), CSVS[:6] + CSVS[-4:], ids=lambda v: "")
def test_the_inference_of_an_fsspec_url_is_the_whole_streams(
    monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, kw: dict[str, Any]
) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    compressors: list[tuple[str, Callable[[bytes], bytes]]] = [("", bytes), (".gz", gzip.compress)]
    for codec, compress in compressors:
        url = f"memory://adv24/{name}.csv{codec}"
        fs.pipe(url, compress(data))
        try:
            _same(url, monkeypatch, **kw)
        finally:
            fs.rm(url)


@pytest.mark.parametrize(("name", "data", "kw"), CSVS, ids=[c[0] for c in CSVS])
def test_a_conversion_keeps_every_row_where_the_inference_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, kw: dict[str, Any]
) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_bytes(data)
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    outs: list[dict[str, Any]] = []
    original = TableSource._arrow_batches
    for head in (True, False):

        def batches(self: TableSource, *a: Any, head: bool = head, **k: Any) -> Any:
            if not head:
                k["head"] = False
            return original(self, *a, **k)

        with monkeypatch.context() as m:
            m.setattr(TableSource, "_arrow_batches", batches)
            src = TableSource(str(path), **kw)
            out = tmp_path / f"out-{head}"
            try:
                rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
            except rf.RecordforgeError as e:
                outs.append({"error": str(e)})
                continue
        ds = rf.open_dataset(out)
        outs.append({"rows": len(ds), "files": listing(out).keys()})
    assert outs[0] == outs[1]


def _convert_url(url: str, out: Path) -> str:
    """The rows written from ``url``, or the error's words."""
    try:
        src = TableSource(url)
        rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
    except rf.RecordforgeError as e:
        return f"error: {e}"
    return f"rows: {len(rf.open_dataset(out))}"


def test_a_plain_memory_url_converts_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsspec = pytest.importorskip("fsspec")
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    fs = fsspec.filesystem("memory")
    url = "memory://adv24/plain.csv"
    fs.pipe(url, ("a,b,c\r\n" + _rows(3000, "\r\n")).encode())
    try:
        outcomes = {_convert_url(url, tmp_path / f"o{k}") for k in range(6)}
    finally:
        fs.rm(url)
    assert outcomes == {"rows: 3000"}


def test_a_gzip_memory_url_never_converts_to_fewer_rows_in_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsspec = pytest.importorskip("fsspec")
    monkeypatch.setattr(table_module, "_BLOCK_BYTES", BLOCK)
    fs = fsspec.filesystem("memory")
    url = "memory://adv24/rows.csv.gz"
    fs.pipe(url, gzip.compress(("a,b,c\r\n" + _rows(3000, "\r\n")).encode()))
    try:
        outcomes = {_convert_url(url, tmp_path / f"o{k}") for k in range(12)}
    finally:
        fs.rm(url)
    # an error is loud; a dataset must hold every row
    assert not {o for o in outcomes if o.startswith("rows") and o != "rows: 3000"}, outcomes


# -- 3. e09d3be: the command's cycle collector -------------------------------------------------

# Reports, per process, whether the collector is on: in the command's own process when
# it renames a file (a shard or dataset.json committed: the subcommand running), in a
# forked worker when it runs a task, and in every process at exit.
PROBE = """
import atexit, gc, multiprocessing, os, sys

_dir = os.environ.get("RF_GC_REPORT")
if _dir:
    def _write(kind):
        role = "worker" if multiprocessing.parent_process() is not None else "main"
        with open(os.path.join(_dir, f"{kind}-{role}-{os.getpid()}"), "w") as f:
            f.write(f"{gc.isenabled()} {sys.argv[:1]}")

    def _audit(event, args):
        if event == "os.rename":
            _write("rename")

    def _wrap_tasks():
        workers = sys.modules.get("recordforge._workers")
        for name, fn in list(getattr(workers, "_TASKS", {}).items()):
            def task(*a, _fn=fn, **k):
                _write("task")
                return _fn(*a, **k)
            workers._TASKS[name] = task

    sys.addaudithook(_audit)
    os.register_at_fork(after_in_child=_wrap_tasks)
    atexit.register(_write, "exit")
"""


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n" + _rows(6000))
    return path


def _probed(tmp_path: Path, command: list[str], **extra: str) -> dict[str, list[str]]:
    """``command`` run with the probe: its reports, by kind-role, and its exit checked."""
    site, report = tmp_path / "site", tmp_path / "report"
    site.mkdir(exist_ok=True)
    report.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(PROBE))
    env = clean_env(RF_GC_REPORT=str(report), **extra)
    env["PYTHONPATH"] = os.pathsep.join((str(site), env["PYTHONPATH"]))
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[str, list[str]] = {}
    for p in sorted(report.iterdir()):
        kind, role, _pid = p.name.split("-")
        found.setdefault(f"{kind}-{role}", []).append(p.read_text().split()[0])
    return found


SCRIPT = str(Path(sys.executable).with_name("recordforge"))
LAUNCHES = {
    "script": [SCRIPT],
    "m": [sys.executable, "-m", "recordforge"],
    "m_cli": [sys.executable, "-m", "recordforge.cli"],
    "m_cli_main": [sys.executable, "-m", "recordforge.cli.__main__"],
    "importtime": [sys.executable, "-X", "importtime", "-m", "recordforge"],
    "m_joined": [sys.executable, "-mrecordforge"],
    "runpy": [
        sys.executable,
        "-c",
        "import runpy, sys; sys.argv[0] = 'recordforge'; "
        "runpy.run_module('recordforge', run_name='__main__')",
    ],
}


@pytest.mark.parametrize("launch", list(LAUNCHES))
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_collector_is_on_while_the_subcommand_runs(
    tmp_path: Path, launch: str, workers: str
) -> None:
    if launch == "script" and not Path(SCRIPT).exists():
        pytest.skip("no console script")
    out = tmp_path / "out"
    command = [*LAUNCHES[launch], "convert", "table", str(_table(tmp_path)), "--out", str(out)]
    found = _probed(
        tmp_path, [*command, "--workers", workers, "--max-records", "1000", "--part-bytes", "20000"]
    )
    assert found["rename-main"] and set(found["rename-main"]) == {"True"}, found
    if workers == "2":
        assert len(found["task-worker"]) == 2 and set(found["task-worker"]) == {"True"}, found
    verified = subprocess.run(
        [*LAUNCHES[launch], "verify", str(out)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert len(rf.open_dataset(out)) == 6000
    assert len(list(out.glob("*.tfrecord"))) == 6


def test_a_spawned_worker_converts_with_the_collector_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [SCRIPT, "convert", "table", str(_table(tmp_path)), "--out", str(out)]
    found = _probed(
        tmp_path,
        [*command, "--workers", "2", "--part-bytes", "20000"],
        RECORDFORGE_START_METHOD="spawn",
    )
    assert len(rf.open_dataset(out)) == 6000
    assert len(found["exit-worker"]) == 2
    assert set(found["exit-worker"]) == {"True"}, found


def test_a_program_keeps_its_collector_as_it_is(tmp_path: Path) -> None:
    table = _table(tmp_path)
    code = """
    import gc, sys
    gc.disable()
    import recordforge
    from recordforge.cli.__main__ import main
    assert not gc.isenabled() and gc.get_freeze_count() == 0
    gc.enable()
    assert main(["convert", "table", sys.argv[1], "--out", sys.argv[2]]) == 0
    assert gc.isenabled(), "main turned the collector off"
    print("frozen", gc.get_freeze_count())
    """
    done = run_code(code, str(table), str(tmp_path / "o"), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    # (convert's own _load freezes the sources it built, before e09d3be too)
    assert "frozen" in done.stdout
    # a program named like the command but importing the package only
    for argv0 in ("train.py", "-c"):
        code = f"""
        import gc, sys
        sys.argv[0] = {argv0!r}
        import recordforge, recordforge.cli.__main__
        print(gc.isenabled(), gc.get_freeze_count())
        """
        done = run_code(code, timeout=TIMEOUT)
        assert done.stdout.split() == ["True", "0"], done.stderr[-2000:]


def test_a_usage_error_and_version_exit_cleanly_with_the_collector_off(tmp_path: Path) -> None:
    for args, code in ((["--version"], 0), (["convert", "table"], 2), (["nope"], 2)):
        done = subprocess.run(
            [sys.executable, "-m", "recordforge", *args],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr


def test_head_output_piped_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "o"
    src = TableSource(str(_table(tmp_path)))
    rf.write_dataset(src.items(), out, to_records=src.to_records, schema=src.schema())
    done = subprocess.run(
        [sys.executable, "-m", "recordforge", "head", str(out), "-n", "5", "--json"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if done.returncode == 2:  # no --json / -n flag: plain head
        done = subprocess.run(
            [sys.executable, "-m", "recordforge", "head", str(out)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
