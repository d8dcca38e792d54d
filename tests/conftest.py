"""Shared pytest fixtures: the external test data in ``../shared/data``."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """A shell starts a background job (``make test &``, ``nohup``) with SIGINT ignored,
    and a child inherits an ignored signal: the tests that interrupt a conversion with
    SIGINT would then see it ignored. The suite restores Python's own handler, which a
    child does not inherit as ignored (an ``exec`` resets a handled signal to its default)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that leave threads in the process run last: the object-store tests
    (fsspec's event-loop thread lives on, and moto's server threads), then the framework
    integrations (Grain's data loader leaves a thread pool; TensorFlow and PyTorch
    threads of their own). With other threads alive, ``write_dataset(workers>1)``
    spawns its workers instead of forking them (``_workers.start_method``), so every
    later test of the default, forked workers would test spawned ones instead
    (``test_parallel_writer.py`` checks that it runs where workers fork).

    Within each of those three groups, the tests marked ``slow`` (~10 s and more) come
    first: ``make test`` runs the suite on two processes (pytest-xdist, ``--dist load``),
    which take tests in this order, each process in increasing order (so the groups stay
    in order in each), and a slow test started last would leave one process idle while
    the other finishes it."""

    def late(item: pytest.Item) -> tuple[int, bool]:
        path = Path(str(item.fspath))
        group = 2 if "integrations" in path.parts else int(path.name.startswith("test_remote"))
        return group, item.get_closest_marker("slow") is None

    items.sort(key=late)


SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The external test data in ``../shared/data`` (relative to the repository root)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny(shared_data: Path) -> dict[str, Path]:
    """Tiny COCO (val2017 subset): the instances, captions and keypoints annotation files
    and the image directory."""
    root = shared_data / "tiny_coco"
    return {
        "annotations": root / "annotations" / "instances_val2017.json",
        "captions": root / "annotations" / "captions_val2017.json",
        "keypoints": root / "annotations" / "person_keypoints_val2017.json",
        "images": root / "val2017",
    }


@pytest.fixture(scope="session")
def vectors(shared_data: Path) -> Path:
    """TFRecord files written by other tools, described in their ``EXPECTED.md``."""
    return shared_data / "tfrecord_vectors"
