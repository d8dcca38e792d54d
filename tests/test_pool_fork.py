"""A ``BlockPool`` in a forked child: the parent's other threads may hold the pool's lock
at the moment of the fork, and no thread of the child will ever release it, so a pool is
left alone in any process but its maker's (the core test
``in_another_process_the_pool_is_left_alone_even_when_its_lock_is_held`` holds the lock
for certain; a fork lands inside it only now and then). Here: children forked while the
parent's threads take and give back blocks all the time make their batches, with buffers
of their own, and get the same values; a child that hangs is killed and fails the test."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

import recordforge as rf
from recordforge import _core


def _columns() -> dict[str, object]:
    return {"id": np.arange(64), "blob": [bytes([i]) * 5_000 for i in range(64)]}


def _child_exit(pid: int, seconds: float) -> int | None:
    """The child's exit code; None when it has not ended within ``seconds`` (killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_a_child_forked_while_threads_use_the_pool_makes_its_batches() -> None:
    pool = _core.BlockPool()
    columns = _columns()
    expected = list(rf.encode_record_batch(columns))
    stop = threading.Event()

    def churn() -> None:  # takes and gives back blocks, the GIL released meanwhile
        while not stop.is_set():
            batch = rf.encode_record_batch(columns, pool=pool)
            del batch

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    exits: list[int | None] = []
    try:
        while len(exits) < 60 and None not in exits:
            pid = os.fork()
            if pid == 0:  # the child: one batch in the inherited pool, then out
                code = 1
                try:
                    code = 0 if list(rf.encode_record_batch(columns, pool=pool)) == expected else 2
                finally:
                    os._exit(code)
            exits.append(_child_exit(pid, 10))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert None not in exits, f"child {len(exits)} never finished its batch (a lock held)"
    assert set(exits) == {0}, "every child made the same records"


def test_a_child_forked_while_a_reader_fills_blocks_reads_its_batches(tmp_path) -> None:
    rf.write_dataset(_columns(), tmp_path)
    ds = rf.open_dataset(tmp_path)
    expected = [bytes(v) for b in ds.batches(4, copy=False) for v in b["blob"].tolist()]
    stop = threading.Event()

    def read() -> None:  # decoder threads take blocks from the dataset's pool, GIL-free
        while not stop.is_set():
            for _ in ds.batches(4, copy=False):
                pass

    reader = threading.Thread(target=read)
    reader.start()
    exits: list[int | None] = []
    try:
        while len(exits) < 60 and None not in exits:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    got = [bytes(v) for b in ds.batches(4, copy=False) for v in b["blob"].tolist()]
                    code = 0 if got == expected else 2
                finally:
                    os._exit(code)
            exits.append(_child_exit(pid, 10))
    finally:
        stop.set()
        reader.join()
    assert None not in exits, f"child {len(exits)} never finished reading (a lock held)"
    assert set(exits) == {0}, "every child read the same values"
