"""Adversarial review of 1f38895: the parallel writer's byte budget per worker
(``_parallel``: HELD_CHUNKS x CHUNK_BYTES of records, MOST_HELD chunks, chunks to the
worker with the fewest left to convert), the tables' row-end scan on a thread beside
the type inference (``TableSource.items``, ``_table_read.beside``), and the CLI's
progress bar made at the first item.

The invariants: the files are one worker's, byte for byte, for any number of workers
(and after a kill and a rerun); a worker holds the records its docstring says; items()
gives what the serial plan-then-scan gave (the same parts, schema and errors) and leaves
no thread running (a thread alive makes the workers spawn instead of fork); the command
fails without a traceback, and draws no bar before the first item."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, cli, held_records, run_code, run_file

import recordforge as rf
from recordforge import _parallel
from recordforge.sources import table as table_module
from recordforge.sources.table import TableSource
from recordforge.writer import write_source

pytest.importorskip("pyarrow")

MB = 1 << 20
TIMEOUT = 120


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def scan_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "recordforge-scan"]


def start_method_now() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parallel.start_method()


# -- 1. the parallel writer: chunks by bytes -------------------------------------------------


def _mixed(item: int) -> list[bytes]:
    """Records of 0 to 9 MB (past CHUNK_BYTES: a chunk stops and gives its rest), item
    errors, items with no record."""
    if item % 13 == 5:
        raise rf.ItemError(f"item {item}", "refused")
    size = 9 * MB if item % 11 == 3 else (3 * MB if item % 7 == 1 else (item * 7919) % 3000)
    return [rf.encode_example({"i": item, "x": bytes([item % 251]) * size})] * (item % 3)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_huge_tiny_refused_and_empty_items_are_one_workers_files(
    tmp_path: Path, compression: str | None
) -> None:
    """on_error="skip": the files of 2 and 3 workers are those of 1 (spilled chunks too);
    on_error="raise": the same error, at the same item, and the same files left."""
    kw: dict[str, Any] = {"max_records": 4, "compression": compression}
    outs = {}
    for w in (1, 2, 3):
        out = tmp_path / f"skip-w{w}"
        rf.write_dataset(iter(range(45)), out, to_records=_mixed, workers=w, on_error="skip", **kw)
        outs[w] = listing(out)
    assert outs[2] == outs[1] and outs[3] == outs[1]
    errors = {}
    for w in (1, 2, 3):
        out = tmp_path / f"raise-w{w}"
        with pytest.raises(rf.ItemError) as caught:
            rf.write_dataset(range(45), out, to_records=_mixed, workers=w, **kw)
        errors[w] = (str(caught.value), listing(out) if out.exists() else None)
    assert errors[2] == errors[1] and errors[3] == errors[1]
    assert "item 5" in errors[1][0]


# Items 0..299 of 10 bytes (the chunks grow to CHUNK_ITEMS = 32 items), then 40 of 5 MB:
# the 32-item chunks that reach them stop after two (10 MB, past CHUNK_BYTES) and give
# their rest, chunk after chunk.
TINY, BIG = 300, 40


def _tiny_then_big(item: int) -> list[bytes]:
    size = 5 * MB if item >= TINY else 10
    return [rf.encode_example({"x": bytes([item % 251]) * size})]


def test_chunks_that_stop_at_chunk_bytes_write_one_workers_files(tmp_path: Path) -> None:
    outs = {}
    for w in (1, 2, 3):
        out = tmp_path / f"w{w}"
        rf.write_dataset(
            iter(range(TINY + BIG)), out, to_records=_tiny_then_big, workers=w, max_records=7
        )
        outs[w] = listing(out)
    assert outs[2] == outs[1] and outs[3] == outs[1]


def test_a_worker_holds_the_documented_bytes_when_no_chunk_stops_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 MB records from the first item: one-item chunks, none stopped early; each
    worker holds at most HELD_CHUNKS x CHUNK_BYTES of records (the bound holds here)."""
    peak = held_records(monkeypatch)
    rf.write_dataset(iter(range(40)), tmp_path / "o", to_records=_tiny_then_big_from_0, workers=2)
    assert max(peak["bytes"].values()) <= _parallel.HELD_CHUNKS * _parallel.CHUNK_BYTES
    assert max(peak["chunks"].values()) <= _parallel.MOST_HELD


def _tiny_then_big_from_0(item: int) -> list[bytes]:
    return [rf.encode_example({"x": bytes([item % 251]) * (5 * MB)})]


def test_rest_chunks_keep_a_worker_within_its_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peak = held_records(monkeypatch)
    rf.write_dataset(
        iter(range(TINY + BIG)), tmp_path / "o", to_records=_tiny_then_big, workers=2, max_records=7
    )
    # Generous: each of HELD_CHUNKS chunks may pass CHUNK_BYTES by one 5 MB record.
    bound = _parallel.HELD_CHUNKS * (_parallel.CHUNK_BYTES + 5 * MB + 1024)
    assert max(peak["bytes"].values()) <= bound, peak
    assert max(peak["chunks"].values()) <= _parallel.MOST_HELD, peak


KILL_SCRIPT = """
import sys
import recordforge as rf

MB = 1 << 20

def to_records(item):
    size = 5 * MB if item >= 300 else 10
    return [rf.encode_example({"x": bytes([item % 251]) * size})]

out, workers, compression = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
rf.write_dataset(iter(range(340)), out, to_records=to_records, workers=workers,
                 max_records=7, compression=compression)
"""


@pytest.mark.parametrize("compression", ["", "gzip"])
def test_a_worker_killed_in_a_chain_of_rests_then_a_rerun_gives_one_workers_files(
    tmp_path: Path, compression: str
) -> None:
    script = tmp_path / "convert.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = clean_env()
    one = run_file(script, str(tmp_path / "w1"), "1", compression, env=env, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr[-2000:]
    killed = run_file(
        script,
        str(tmp_path / "k"),
        "2",
        compression,
        env={**env, "RECORDFORGE_KILL_WORKER_AT": "325"},
        timeout=TIMEOUT,
    )
    assert killed.returncode != 0 and "a worker process died" in killed.stderr
    again = run_file(script, str(tmp_path / "k"), "3", compression, env=env, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert listing(tmp_path / "k") == listing(tmp_path / "w1")


# -- 2. tables: the row-end scan beside the type inference ------------------------------------


def _files(d: Path) -> dict[str, Path]:
    import gzip

    rows = "".join(f"{i},t{i},{i / 3}\n" for i in range(6000))
    jsonl = "".join(json.dumps({"a": i, "b": f"t{i}", "c": i / 3}) + "\n" for i in range(6000))
    files = {
        "csv": ("t.csv", ("a,b,c\n" + rows).encode()),
        "gz": ("t.csv.gz", gzip.compress(("a,b,c\n" + rows).encode())),
        "jsonl": ("t.jsonl", jsonl.encode()),
        "spread": (
            "s.jsonl",
            "".join(json.dumps({"a": i, "b": "x"}, indent=1) + "\n" for i in range(500)).encode(),
        ),
        "skip": ("skip.csv", ("6000,3,x\n" + rows).encode()),
        "dup": ("dup.csv", b"a,a\n1,2\n"),
        "badrow": ("badrow.csv", b"a,b\n1,2,3\n" + b"1,2\n" * 1000),
        "empty": ("empty.csv", b""),
        "header": ("header.csv", b"a,b\n"),
        "badjson": ("bad.jsonl", b'{"a": 1}\n{"a":\n'),
        "truncgz": ("trunc.csv.gz", gzip.compress(b"a,b\n" + b"1,2\n" * 3_000_000)[:20_000]),
    }
    paths = {}
    for key, (name, data) in files.items():
        (d / name).write_bytes(data)
        paths[key] = d / name
    (d / "link.csv").symlink_to("t.csv")
    paths["link"] = d / "link.csv"
    (d / "dangling.csv").symlink_to("nowhere.csv")
    paths["dangling"] = d / "dangling.csv"
    paths["missing"] = d / "missing.csv"
    paths["dir"] = d
    return paths


NUMBER = rf.FeatureSpec(dtype="int64")
CASES: list[tuple[str, dict[str, Any]]] = [
    ("csv", {}),
    ("csv", {"part_bytes": 1000}),
    ("csv", {"schema": rf.Schema({"a": NUMBER})}),
    ("csv", {"schema": rf.Schema({"nope": NUMBER})}),
    ("csv", {"nullable_ints": "float32"}),
    ("gz", {}),
    ("jsonl", {"part_bytes": 5000}),
    ("spread", {}),
    ("spread", {"schema": rf.Schema({"nope": NUMBER})}),
    ("skip", {"skip_rows": 1, "column_names": ["x", "y", "z"]}),
    ("link", {}),
    ("dangling", {}),
    ("missing", {}),
    ("dir", {"format": "csv"}),
    ("dup", {}),
    ("badrow", {}),
    ("empty", {}),
    ("header", {}),
    ("badjson", {}),
    ("truncgz", {}),
]


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        return "ok", repr(call())
    except Exception as e:
        return type(e).__name__, str(e)


def test_items_gives_what_the_serial_plan_then_scan_gave_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    """For every input (CSV, gzip CSV, JSONL, JSONL spread over lines, skip_rows and
    column_names, schema=, nullable_ints, a symlink; and the refused: missing, dangling
    link, a directory, duplicate columns, a bad first row, empty, bad JSON, a truncated
    gzip stream): items() with the scan on a thread gives the parts, schema and error of
    HEAD~1's order (plan, then scan, on this thread), and no thread runs after it."""
    paths = _files(tmp_path)
    for key, kw in CASES:
        path = paths[key]
        beside = TableSource(path, **kw)
        got = _outcome(lambda src=beside: (src.items(), src.schema()))
        serial = TableSource(path, **kw)
        want = _outcome(lambda src=serial: (src._plan(), src.parts(), src.schema())[1:])
        assert got == want, (key, kw)
        assert not scan_threads(), (key, kw)
        assert start_method_now() == "fork", (key, kw)


def test_tables_convert_to_one_workers_files_through_the_scan_beside(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    for key, kw in [("csv", {"part_bytes": 7000}), ("gz", {}), ("spread", {}), ("skip", {})]:
        if key == "skip":
            kw = {"skip_rows": 1, "column_names": ["x", "y", "z"], "part_bytes": 9000}
        outs = {}
        for w in (1, 2, 3):
            out = tmp_path / f"{key}-w{w}"
            write_source(TableSource(paths[key], **kw), out, workers=w, max_records=1000)
            outs[w] = listing(out)
            assert not scan_threads()
        assert outs[2] == outs[1] and outs[3] == outs[1], key


def test_a_fifo_is_read_without_the_scan_thread_and_does_not_hang(tmp_path: Path) -> None:
    """A FIFO is not scanned beside the inference (its open waits for a writer): with a
    writer that writes it twice, items() ends (its parts, or an error: an ItemError naming
    the file since pyarrow's OSError is one)
    and beside() is never called."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    code = f"""
        import json, threading
        from recordforge.sources import table

        called = []
        table.beside = lambda *a: called.append(1)

        def write():
            for _ in range(2):
                with open({str(fifo)!r}, "w") as f:
                    f.write("a,b\\n1,2\\n3,4\\n")

        threading.Thread(target=write, daemon=True).start()
        from recordforge import ItemError

        try:
            outcome = repr(table.TableSource({str(fifo)!r}).items())
        except ItemError as e:  # naming the file
            outcome = "ItemError" if e.item == {str(fifo)!r} else repr(e)
        print(json.dumps([called, outcome]))
    """
    done = run_code(code)
    assert done.returncode == 0, done.stderr[-2000:]
    called, outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert called == [] and (outcome == "ItemError" or "TablePart" in outcome), outcome


def test_an_interrupt_while_items_waits_for_the_scan_leaves_no_thread(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_bytes(b"a,b\n" + b"1,2\n" * 4_000_000)  # 128 reads of the scan (128 KiB each)
    code = f"""
        import json, signal, threading, time, warnings
        from recordforge import _parallel
        from recordforge.sources import _table_parts
        from recordforge.sources.table import TableSource

        scanner = _table_parts.CsvPartScanner

        class Slow:  # 0.1 s a block: the scan outlasts the inference
            def __init__(self, *args):
                self.inner = scanner(*args)
                self.line, self.finish = self.inner.line, self.inner.finish

            def feed(self, data):
                time.sleep(0.1)
                return self.inner.feed(data)

        _table_parts.CsvPartScanner = Slow
        plan = TableSource._plan
        main = threading.main_thread().ident
        killers = []

        def planned(self):  # Ctrl-C 0.3 s after the inference ended, in the join
            result = plan(self)
            def interrupt():
                time.sleep(0.3)
                signal.pthread_kill(main, signal.SIGINT)
            killers.append(threading.Thread(target=interrupt))
            killers[-1].start()
            return result

        TableSource._plan = planned
        try:
            TableSource({str(big)!r}).items()
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        for killer in killers:
            killer.join()
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            method = _parallel.start_method()
        print(json.dumps([interrupted, left, method]))
    """
    done = run_code(code)
    assert done.returncode == 0, done.stderr[-2000:]
    interrupted, left, method = json.loads(done.stdout.strip().splitlines()[-1])
    assert interrupted
    assert left == [] and method == "fork"


def test_nullable_float32_inference_does_not_scan_the_file_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nulls.csv"
    path.write_text("a,b\n" + "".join(f"{i},{'' if i % 7 else i}\n" for i in range(200_000)))
    scans: list[str] = []
    main_scanned = threading.Event()
    file_parts = table_module.file_parts

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            main_scanned.set()
        else:  # the thread's scan waits a little for the main thread's, if it comes
            main_scanned.wait(5)
        return file_parts(*args, **kwargs)

    monkeypatch.setattr(table_module, "file_parts", counted)
    src = TableSource(path, nullable_ints="float32", part_bytes=100_000)
    parts = src.items()
    in_items = list(scans)
    assert parts == TableSource(path, part_bytes=100_000).parts()  # holds
    assert src.schema()["b"].dtype == "float32"  # holds
    assert len(in_items) == 1, in_items


def test_a_truncated_gzip_csv_error_names_the_file(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "cut.csv.gz"
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 3_000_000)
    path.write_bytes(data[: len(data) // 2])
    done = cli("convert", "table", str(path), "--out", str(tmp_path / "o"), "--workers", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr  # holds
    assert "cut.csv.gz" in done.stderr, done.stderr


# -- 3. the command: --workers 1/2/3, the bar at the first item --------------------------------


def test_the_command_writes_one_workers_files_and_draws_the_bar_only_once_an_item_converts(
    tmp_path: Path,
) -> None:
    paths = _files(tmp_path)
    outs = {}
    for w in ("1", "2", "3"):
        out = tmp_path / f"cli-w{w}"
        done = cli(
            "convert", "table", str(paths["csv"]), "--out", str(out), "--workers", w,
            "--part-bytes", "20000", "--max-records", "1000",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "convert table" in done.stdout  # the bar, drawn
        outs[w] = listing(out)
    assert outs["2"] == outs["1"] and outs["3"] == outs["1"]
    # No item: a header only (exit 0), and an error in the first part (exit 1): no bar.
    done = cli("convert", "table", str(paths["header"]), "--out", str(tmp_path / "h"))
    assert done.returncode == 0 and "convert table" not in done.stdout + done.stderr
    bad = tmp_path / "first.csv"
    bad.write_text("a,b\nx,1\n2,2\n")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(rf.Schema({"a": NUMBER}).to_json()))
    for w in ("1", "2", "3"):
        done = cli(
            "convert", "table", str(bad), "--schema", str(schema),
            "--out", str(tmp_path / f"bad-w{w}"), "--workers", w,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "first.csv: row 1: column 'a'" in done.stderr
        assert "convert table" not in done.stdout + done.stderr
    # Refused before any work: no bar, no traceback, the file named.
    for key in ("missing", "dangling", "dup", "badrow", "empty"):
        for w in ("1", "2"):
            done = cli(
                "convert", "table", str(paths[key]), "--out", str(tmp_path / f"{key}{w}"),
                "--workers", w,
            )  # fmt: skip
            assert done.returncode == 1 and "Traceback" not in done.stderr, (key, done.stderr)
            assert paths[key].name in done.stderr and "convert table" not in done.stdout
