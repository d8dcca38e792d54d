"""Writing a dataset to a URL (``gs://``, ``s3://``, ...) with the local writer.

The conversion runs into a local temporary directory; then every shard and index is
uploaded under a temporary key and moved to its final key, and ``dataset.json`` goes
last, so a remote directory without it is an unfinished conversion, as locally.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recordforge import _fs
from recordforge._outdir import JOURNAL_NAME
from recordforge.manifest import MANIFEST_NAME, Manifest

__all__ = ["prepare_out", "write_to_url"]


def prepare_out(out: str, overwrite: bool) -> None:
    """The checks of the local writer on a remote directory: refuses one that holds a
    complete dataset (unless ``overwrite``) or files that are not a recordforge
    dataset's; ``overwrite`` removes what is there."""
    if _fs.isfile(out):
        raise FileExistsError(f"{out}: exists and is not a directory")
    entries = _fs.listdir(out) if _fs.isdir(out) else []
    if not entries:
        return
    names = {n for n, _ in entries}
    if MANIFEST_NAME not in names and JOURNAL_NAME not in names:
        raise FileExistsError(
            f"{out}: directory is not empty and is not a recordforge dataset; refusing to write"
        )
    if overwrite or JOURNAL_NAME in names:
        # With the marker there, an earlier run did not finish (remote writes do not
        # resume yet): it starts over, leftovers of the killed run included.
        for name, _ in entries:
            _fs.remove(_fs.join(out, name))
    elif MANIFEST_NAME in names:
        raise FileExistsError(
            f"{out}: already holds a complete dataset; use --overwrite (overwrite=True) "
            "to replace it"
        )


def write_to_url(out: str, overwrite: bool, write_local: Callable[[Path], Manifest]) -> Manifest:
    """Runs ``write_local`` into a temporary directory and commits its files to ``out``."""
    prepare_out(out, overwrite)
    # Marks the directory as an unfinished recordforge conversion until dataset.json.
    marker = _fs.join(out, JOURNAL_NAME)
    _fs.write_bytes(marker, b'{"fingerprint": null}\n')
    with _fs.local_dir() as local:
        manifest = write_local(local)
        for path in sorted(local.iterdir()):
            if path.name != MANIFEST_NAME:
                _fs.upload(path, _fs.join(out, path.name))
        manifest.save(out)
    _fs.remove(marker)
    return manifest
