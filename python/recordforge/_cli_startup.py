"""What the ``recordforge`` command sets up before NumPy loads (imported first by the
package, so it runs before ``import numpy`` in any process).

NumPy's wheels bundle OpenBLAS, which starts a thread per core when it loads, and each
thread spins for about 0.1 s of CPU before it sleeps: a third of the command's start-up
CPU, for a library it never calls. In the command's own process (the ``recordforge``
script, ``python -m recordforge``, ``python -m recordforge.cli``) ``OPENBLAS_NUM_THREADS``
is set to 1 unless it is set already; a program that imports ``recordforge`` is left as
it is.

The same process keeps Python's cycle collector out of its start and its end: it is off
while the command's modules load (each collection walks every object the imports made
so far) and the objects that exist once they have loaded are frozen (``gc.freeze()``:
later collections skip them, and forked workers do not copy their pages by walking
them); the objects left when the command is done are frozen too, so that the
interpreter's last collection at exit walks none of them. ~35-85 ms of a command's
0.3 s (``recordforge convert table`` of a small CSV); what is written is closed and
committed before (writers left open are closed by an ``atexit`` hook). And Ctrl-C while
the modules load ends the command quietly (:func:`quiet_interrupts`).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Sequence

#: ``python -m`` names that run the command.
COMMAND_MODULES = frozenset(("recordforge", "recordforge.cli", "recordforge.cli.__main__"))
#: What the console script is called.
COMMAND_SCRIPTS = frozenset(("recordforge", "recordforge.exe"))


def is_the_command(argv: Sequence[str], orig_argv: Sequence[str]) -> bool:
    """Whether this process runs the command. While ``python -m M`` imports M's packages
    ``sys.argv[0]`` is ``"-m"``; M is then found in ``sys.orig_argv``.

    >>> is_the_command(["/venv/bin/recordforge", "info"], ["python", "/venv/bin/recordforge"])
    True
    >>> is_the_command(["-m"], ["python", "-X", "importtime", "-m", "recordforge", "info"])
    True
    >>> is_the_command(["-m"], ["python", "-m", "pytest"]), is_the_command(["train.py"], [])
    (False, False)
    """
    if not argv:
        return False
    if argv[0] != "-m":
        return os.path.basename(argv[0]) in COMMAND_SCRIPTS
    options = list(orig_argv[:-1])
    return "-m" in options and orig_argv[options.index("-m") + 1] in COMMAND_MODULES


def quiet_blas() -> None:
    """Sets ``OPENBLAS_NUM_THREADS=1`` in the command's process before NumPy loads (not
    when NumPy is loaded already, nor over a value the user set)."""
    if (
        "numpy" not in sys.modules
        and "OPENBLAS_NUM_THREADS" not in os.environ
        and is_the_command(sys.argv, getattr(sys, "orig_argv", ()))
    ):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


quiet_blas()


_QUIETED: list[bool] = []
"""Whether :func:`quiet_gc` turned the collector off (decided once, while the package
loads: once ``python -m recordforge`` runs, ``sys.argv[0]`` is the module's path)."""


def quiet_gc() -> None:
    """The cycle collector off while the command's modules load (see :func:`settle`)."""
    orig_argv = getattr(sys, "orig_argv", ())
    # (a multiprocessing child started by spawn has the command's argv, not its main)
    spawned = "--multiprocessing-fork" in orig_argv
    if is_the_command(sys.argv, orig_argv) and not spawned and gc.isenabled():
        gc.disable()
        _QUIETED.append(True)


def _interrupted_while_loading(signum: int, frame: object) -> None:
    os.write(2, b"recordforge: interrupted\n")
    os._exit(130)


def quiet_interrupts() -> None:
    """Ctrl-C while the command's modules load (~0.2-0.3 s, nothing written yet) ends it
    with exit status 130 and one line, not a ``KeyboardInterrupt`` traceback from
    inside an import; :func:`settle` gives Ctrl-C back to Python (the subcommand's own
    handling: "interrupted", and a conversion's "rerun the same command to resume").
    Only where Ctrl-C is Python's: a command started with SIGINT ignored (a background
    job of a script, a child its parent shields) keeps ignoring it."""
    if _QUIETED and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_loading)


def settle() -> None:
    """The command's modules loaded (its subcommand about to run): what exists is frozen
    and the collector on again, Ctrl-C raises ``KeyboardInterrupt`` again. Nothing
    outside the command's own process."""
    if _QUIETED:
        gc.freeze()
        gc.enable()
        if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def done() -> None:
    """The command is done: what exists is frozen (the collection at exit skips it)."""
    if _QUIETED:
        gc.freeze()


quiet_gc()
quiet_interrupts()
