#!/usr/bin/env bash
# Every extra works alone: for each extra named, a fresh venv holding only recordforge
# (from one wheel built here) and that extra, then that extra's main path
# (tests/extras/main_paths.py) on data made in the check.
#
#   tests/extras/run.sh EXTRA [EXTRA ...]    (`make extras` names the CI's list)
#
# PYTHON    interpreter the fresh venvs are made from (default python3)
# MATURIN   maturin that builds the wheel (default .venv/bin/maturin)
# MOTO_PYTHON  a python with moto[server], for the cloud extra's S3 server (default
#           .venv/bin/python: moto is a dev tool and stays out of the extra's venv)
# KEEP=1    keep the venvs and data (printed path) instead of removing them
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

PYTHON=${PYTHON:-python3}
MATURIN=${MATURIN:-.venv/bin/maturin}
MOTO_PYTHON=$(realpath -s "${MOTO_PYTHON:-.venv/bin/python}")  # main_paths.py runs elsewhere
extras=("$@")
if [ ${#extras[@]} -eq 0 ]; then
    echo "usage: $0 EXTRA [EXTRA ...]   (extras of pyproject.toml: beam, table, ...)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/recordforge-extras.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "extras: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi

start=$SECONDS
say() { echo "==> [extras $((SECONDS - start))s] $*"; }

say "building the recordforge wheel (release profile) into $work/wheel"
"$MATURIN" build --release --interpreter "$PYTHON" --out "$work/wheel"
wheel=$(ls "$work"/wheel/recordforge-*.whl)

# One extra: its venv, install and main path, its output in its log.
check() {
    local extra=$1 venv=$work/venv-$1
    say "$extra: fresh venv, pip install 'recordforge[$extra]'"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        "$wheel[$extra]"
    "$venv/bin/python" -m pip check --disable-pip-version-check
    say "$extra: $("$venv/bin/python" -m pip list --format freeze | wc -l) packages in the" \
        "venv, $(du -sh "$venv/lib" | cut -f1) in site-packages; running its main path"
    (cd "$work" && RECORDFORGE_MOTO_PYTHON=$MOTO_PYTHON \
        "$venv/bin/python" "$root/tests/extras/main_paths.py" "$extra" --work "data-$extra")
    [ "${KEEP:-0}" = 1 ] || rm -rf "$venv" "$work/data-$extra"
}

# EXTRAS_JOBS extras at a time (default 2): most of a check is pip unpacking wheels and
# waiting on its cache, so two share CI's 2 cores (~200 s one at a time, measured
# 2026-12-07). Each one's output is printed whole when it ends; a line says when each
# starts, so that the log is never silent for longer than one check.
jobs=${EXTRAS_JOBS:-2}
declare -A running=()  # pid -> extra
failed=()
finish_one() {
    local pid extra
    wait -n -p pid "${!running[@]}" && rc=0 || rc=$?
    extra=${running[$pid]}
    unset "running[$pid]"
    cat "$work/log-$extra"
    if [ "$rc" -ne 0 ]; then
        failed+=("$extra")
        say "$extra: FAILED (exit $rc)"
    fi
}
for extra in "${extras[@]}"; do
    while [ ${#running[@]} -ge "$jobs" ]; do finish_one; done
    say "$extra: started (its output follows when it ends)"
    check "$extra" > "$work/log-$extra" 2>&1 &
    running[$!]=$extra
done
while [ ${#running[@]} -gt 0 ]; do finish_one; done
if [ ${#failed[@]} -gt 0 ]; then
    say "extras that failed: ${failed[*]}"
    exit 1
fi
say "every extra works alone: ${extras[*]}"
