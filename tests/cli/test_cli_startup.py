"""The command's start-up: OpenBLAS's threads (NumPy's, unused by the command) are not
started in the command's process, and a program that imports recordforge keeps them;
the command's cycle collector is off while its modules load, on while it runs, and
what exists at its start and end is frozen (a program's collector is left as it is).

Each run is a real process; a ``sitecustomize`` put first on its path reports, at exit,
what ``OPENBLAS_NUM_THREADS`` was and how many threads the process had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recordforge._cli_startup import is_the_command

REPORTER = """
import atexit, gc, json, os, sys

def _report():
    with open(os.environ["STARTUP_REPORT"], "w") as f:
        json.dump({"blas": os.environ.get("OPENBLAS_NUM_THREADS"),
                   "threads": len(os.listdir("/proc/self/task")),
                   "numpy": "numpy" in sys.modules,
                   "gc": gc.isenabled(), "frozen": gc.get_freeze_count(),
                   "collected": [g["collections"] for g in gc.get_stats()]}, f)

atexit.register(_report)
"""


def run(tmp_path: Path, command: list[str], **env: str) -> dict[str, object]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(REPORTER)
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    environ.update(env, STARTUP_REPORT=str(report))
    environ["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [environ.get("PYTHONPATH")])])
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(report.read_text())
    assert result["numpy"], "the run did not load NumPy: it shows nothing"
    return result


@pytest.mark.parametrize("module", ["recordforge", "recordforge.cli"])
def test_python_m_runs_the_command_without_blas_threads(tmp_path: Path, module: str) -> None:
    got = run(tmp_path, [sys.executable, "-m", module, "--version"])
    assert got["blas"] == "1"


def test_the_console_script_runs_without_blas_threads(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "recordforge"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (not installed with pip)")
    assert run(tmp_path, [str(script), "--version"])["blas"] == "1"


def test_the_users_setting_is_kept_and_is_what_saves_the_threads(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("OpenBLAS starts no thread of its own on one CPU")
    ours = run(tmp_path, [sys.executable, "-m", "recordforge", "--version"])
    theirs = run(
        tmp_path, [sys.executable, "-m", "recordforge", "--version"], OPENBLAS_NUM_THREADS="2"
    )
    assert theirs["blas"] == "2"
    # OpenBLAS starts one thread less than it is told to use (the caller is the first).
    assert theirs["threads"] == ours["threads"] + 1  # type: ignore[operator]


def test_a_program_importing_recordforge_keeps_its_blas_threads(tmp_path: Path) -> None:
    program = tmp_path / "train.py"
    program.write_text("import recordforge\n")
    assert run(tmp_path, [sys.executable, str(program)])["blas"] is None
    assert run(tmp_path, [sys.executable, "-c", "import recordforge"])["blas"] is None


def _tiny(tmp_path: Path) -> Path:
    import recordforge as rf

    data = tmp_path / "d.tfrecord"
    with rf.TFRecordWriter(data) as w:
        w.write_many([rf.encode_example({"x": [i]}) for i in range(10)])
    return data


@pytest.mark.parametrize("how", ["script", "-m"])
def test_the_commands_collector_runs_with_what_it_loaded_frozen(tmp_path: Path, how: str) -> None:
    data = _tiny(tmp_path)
    script = Path(sys.executable).parent / "recordforge"
    command = [str(script)] if how == "script" else [sys.executable, "-m", "recordforge"]
    got = run(tmp_path, [*command, "count", str(data)])
    assert got["gc"] is True  # on again once the modules loaded
    assert got["frozen"] > 10_000  # (the modules' objects)


def test_a_program_calling_main_keeps_its_collector(tmp_path: Path) -> None:
    data = _tiny(tmp_path)
    code = (
        "import sys; from recordforge.cli.__main__ import main; "
        "sys.argv = ['train.py', 'count', sys.argv[1]]; main(sys.argv[1:])"
    )
    got = run(tmp_path, [sys.executable, "-c", code, str(data)])
    assert got["gc"] is True and got["frozen"] == 0
    assert got["collected"][0] > 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "orig_argv", "expected"),
    [
        (["/usr/local/bin/recordforge", "info", "x"], [], True),
        (["-m"], ["python3", "-m", "recordforge.cli", "info"], True),
        (["-m"], ["python3", "-X", "importtime", "-m", "recordforge"], True),
        (["-m"], ["python3", "-m", "pytest", "-m", "recordforge"], False),
        (["-m"], ["python3", "-m"], False),
        (["/home/me/recordforge.py"], [], False),
        (["/home/me/train.py", "recordforge"], [], False),
        (["-c"], ["python3", "-c", "import recordforge"], False),
        ([], [], False),
    ],
)
def test_is_the_command(argv: list[str], orig_argv: list[str], expected: bool) -> None:
    assert is_the_command(argv, orig_argv) is expected


FORK_REPORTER = """
import atexit, json, os, sys, threading

forks = []
os.register_at_fork(before=lambda: forks.append(
    ["rich.progress" in sys.modules, threading.active_count()]))

def _report():
    with open(os.environ["STARTUP_REPORT"], "w") as f:
        json.dump({"numpy": "numpy" in sys.modules, "forks": forks}, f)

atexit.register(_report)
"""


def test_the_progress_bar_is_imported_before_the_workers_fork(tmp_path: Path) -> None:
    """rich (the progress bar) is imported beside the source's enumeration, on a thread
    that has ended when the workers fork: the parent does not stop handing out work to
    import it at the first item converted, and the workers are forked, not spawned."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FORK_REPORTER)
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(2000)))
    report = tmp_path / "report.json"
    environ = dict(os.environ, STARTUP_REPORT=str(report), PYTHONPATH=str(hook))
    command = [sys.executable, "-m", "recordforge", "convert", "table", str(table)]
    command += ["--out", str(tmp_path / "out"), "--workers", "2", "--part-bytes", "4KB"]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "spawn" not in done.stderr, done.stderr
    forks = json.loads(report.read_text())["forks"]
    assert forks == [[True, 1], [True, 1]], forks  # two workers, rich in, no other thread


INTERRUPTER = """
import importlib.abc, os, signal, sys

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["INTERRUPT_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, in the middle of the imports
        return None

sys.meta_path.insert(0, Interrupt())
"""


@pytest.mark.parametrize("module", ["numpy", "recordforge.writer", "rich.progress"])
def test_ctrl_c_while_the_command_loads_ends_it_quietly(tmp_path: Path, module: str) -> None:
    """Ctrl-C during the imports: exit 130 and one line, no traceback (rich.progress is
    imported beside the input's enumeration, after the modules loaded: Python's own
    handling then, the command's "interrupted")."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPTER)
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    environ = dict(os.environ, INTERRUPT_AT=module, PYTHONPATH=str(hook))
    command = [sys.executable, "-m", "recordforge", "convert", "table", str(table)]
    command += ["--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "interrupted" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path: Path) -> None:
    """A background job of a script starts with SIGINT ignored: a Ctrl-C meant for the
    script neither ends it while its modules load nor afterwards (the handler of
    quiet_interrupts is not installed, and settle leaves SIGINT as it found it)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        INTERRUPTER + "\nimport atexit\natexit.register(lambda: print('SIGINT', signal.getsignal("
        "signal.SIGINT) == signal.SIG_IGN, file=sys.stderr))\n"
    )
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    environ = dict(os.environ, INTERRUPT_AT="numpy", PYTHONPATH=str(hook))
    command = [sys.executable, "-m", "recordforge", "convert", "table", str(table)]
    command += ["--out", str(tmp_path / "out")]
    done = subprocess.run(
        command,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.returncode == 0, done.stderr
    assert "SIGINT True" in done.stderr, done.stderr
    assert (tmp_path / "out" / "dataset.json").exists()


def test_ctrl_c_while_the_progress_bar_is_imported_is_raised_after(tmp_path: Path) -> None:
    """A Ctrl-C that arrives while convert waits for the thread importing rich ends the
    command ("interrupted", 130): it was swallowed by the wait, and the conversion ran on
    to exit 0."""
    script = tmp_path / "slow_rich.py"
    script.write_text(
        "import builtins, os, signal, sys, threading, time\n"
        "sys.modules.pop('rich.progress', None)\n"
        "real = builtins.__import__\n"
        "def slow(name, *args, **kwargs):\n"
        "    if name == 'rich.progress' and threading.current_thread().name == "
        "'recordforge-import':\n"
        "        time.sleep(0.3)\n"  # (the with block ended meanwhile: convert waits)
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.3)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = slow\n"
        "from recordforge.cli._output import progress_imported_beside\n"
        "try:\n"
        "    with progress_imported_beside():\n"
        "        pass\n"
        "    print('not raised')\n"
        "except KeyboardInterrupt:\n"
        "    print('raised', [t.name for t in threading.enumerate()])\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "raised ['MainThread']", done.stdout + done.stderr
