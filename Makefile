# The targets CI, the README and developers run. `make test` is the whole check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FUZZ_SECONDS ?= 24
# libFuzzer's seed: fixed, so that a CI run is repeatable (a failure found by a fresh seed
# is kept in fuzz/regressions/ and replayed by pytest); FUZZ_SEED=0 lets libFuzzer pick.
FUZZ_SEED ?= 1

.PHONY: demo install dev test lint rust-test py-test fuzz extras bench bench-beam bench-coco bench-inspect bench-read bench-table bench-decode bench-workers bench-remote bench-costs bench-convert-path clean

# Quick start 1: install the package (release build of the Rust core) and run the demo.
demo: install
	$(BIN)/recordforge demo

# pip shows a build backend's output only with -v, so the wheel is built on its own and
# verbosely (cargo prints a line per crate: minutes on a first build, not silence), then
# installed with the extras; --force-reinstall --no-deps replaces an installed recordforge
# of the same version (an editable one from `make dev`, or an older build).
install: $(BIN)/python
	@echo "==> [1/3] building recordforge's wheel: the Rust core, release profile (a few minutes the first time)"
	rm -rf target/install-wheel
	$(BIN)/pip wheel -v --no-deps --wheel-dir target/install-wheel .
	@echo "==> [2/3] installing its dependencies and the images and tf extras (~1.6 GB, mostly tensorflow-cpu)"
	$(BIN)/pip install --progress-bar on "$$(ls target/install-wheel/recordforge-*.whl)[images,tf]"
	@echo "==> [3/3] installing the wheel just built"
	$(BIN)/pip install --force-reinstall --no-deps target/install-wheel/recordforge-*.whl

# Development environment: editable install with the test, TensorFlow, image, table, Beam,
# cloud-path, PyTorch and JAX/Grain extras (the torch / grain adapters' tests run in CI).
# pip prints a line per package (not --quiet: minutes of downloads are not silence); the
# editable build of the Rust core says "Building editable for recordforge" and then
# compiles for a few minutes on a first run.
dev: $(BIN)/python
	@echo "==> installing recordforge (editable; the Rust core is compiled: a few minutes the first time) with the dev, tf, images, table, beam, cloud, torch and jax extras (~5 GB, mostly torch's CUDA wheels and tensorflow-cpu)"
	bash -o pipefail -c '$(BIN)/pip install --progress-bar off -e ".[dev,tf,images,table,beam,cloud,torch,jax]" | { grep -v "^Requirement already satisfied" || true; }'

$(BIN)/python:
	@echo "==> creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Quick start 2: everything CI checks.
test: dev lint rust-test py-test fuzz extras

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest recordforge._core
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test:
	cargo test -p recordforge-core

# Two test processes (pytest-xdist): the suite's slow tests wait on subprocesses, retries
# and backoff as much as they compute, so on CI's 2 cores it takes ~16 min instead of ~29
# (measured 2026-12-07). `--dist load` hands tests out in the suite's order, so that each
# process runs them in increasing order: the tests that leave threads behind stay last in
# each (tests/conftest.py; `worksteal` could hand an early test to a process after a late
# one). Test ids must be the same in every process (xdist refuses the run otherwise): no
# object addresses or timestamps in parametrize ids. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
py-test:
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist load

# Five fuzz targets, FUZZ_SECONDS each (2 minutes of fuzzing in all, as with two targets of
# 60 s), two at a time on their own processes (~1 minute of wall time).
fuzz:
	$(BIN)/python fuzz/run.py --jobs 2 --seconds $(FUZZ_SECONDS) --libfuzzer-arg=-seed=$(FUZZ_SEED)

# Every extra works alone: per extra, a fresh venv with only recordforge (one wheel, built
# here) and that extra runs the extra's main path on data it makes (tests/extras/run.sh,
# two extras at a time, EXTRAS_JOBS=1 for one; downloads cached by pip). torch is not in the list: PyPI's torch wheel pulls
# ~3.4 GB of CUDA packages (`make extras EXTRAS=torch` runs it).
EXTRAS ?= table images cloud beam jax tf
extras: dev
	PYTHON=$(PYTHON) MATURIN=$(BIN)/maturin MOTO_PYTHON=$(BIN)/python tests/extras/run.sh $(EXTRAS)

bench: dev
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_core.py

# The same COCO conversion locally (workers=1/2) and on Beam's in-process runner (tiny COCO x40).
bench-beam: dev
	$(BIN)/python benchmarks/bench_beam.py

# COCO per annotation / per image vs the Keras example's way and TF raw bytes (tiny COCO x40).
bench-coco: dev
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_coco.py

# count / verify throughput on a generated 2 GB dataset vs TensorFlow and sequential reads.
bench-inspect: dev
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_inspect.py

# Reading for training: table and image records into columns vs tf.data + parse_example and
# the tfrecord package; random access vs seek+read and tfd-utils (in a venv of its own: it
# pins protobuf < 6, the dev venv has TensorFlow's protobuf 6).
bench-read: dev
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	test -x $(VENV)-tfd-utils/bin/python || $(PYTHON) -m venv $(VENV)-tfd-utils
	$(VENV)-tfd-utils/bin/pip install --quiet tfd-utils==1.3.0 || true
	$(BIN)/python benchmarks/bench_read.py --tfd-python $(VENV)-tfd-utils/bin/python

# Table conversion: 1M rows x 21 columns from columns and from CSV vs TF one Example per row.
bench-table: dev
	$(BIN)/python benchmarks/bench_table.py

# --workers 1 / 2 / auto side by side, each run a fresh `recordforge convert` process: COCO
# per annotation with --resize 256, COCO per image, a 1M-row CSV (~3-5 min; --quick ~1 min).
bench-workers: dev
	$(BIN)/python benchmarks/bench_workers.py

# A dataset read from S3 (moto on loopback) and from local disk, side by side: batches(),
# ds[i], write_dataset; local disk used for staging (~1 min).
bench-remote: dev
	$(BIN)/python benchmarks/bench_remote.py

# Issue 17's hidden costs: open + batches of foreign files, decode_example, scan_records,
# beside TF and the TF-free peers installed in their own venv (.venv-peers; rustfrecord
# needs numpy 1.24 and pulls torch: ~1 GB, so it is not part of `make dev`).
bench-costs: dev
	test -x .venv-peers/bin/python || { $(PYTHON) -m venv .venv-peers && .venv-peers/bin/pip install --progress-bar on rustfrecord tfrecord-lite tfrecords "numpy==1.24.4"; }
	test -x .venv-tfd/bin/python || { $(PYTHON) -m venv .venv-tfd && .venv-tfd/bin/pip install --progress-bar on "tfd-utils==1.3.0"; }
	$(BIN)/python benchmarks/bench_costs.py --peers-python .venv-peers/bin/python --tfd-python .venv-tfd/bin/python

# Issue 17's conversion path: tiny COCO per annotation (x10, 3,820 records of ~180 KB)
# written by an rf.encode_example + rf.TFRecordWriter loop, by write_dataset(rows) and by
# `recordforge convert coco`, each in its own process, CPU per record (~1 min).
bench-convert-path: dev
	$(BIN)/python benchmarks/bench_convert_path.py

# JPEG records read + decoded to uint8 (simplejpeg on threads) vs tf.data + decode_jpeg, the
# JPEG decoder alone and Pillow (2,000 images of 500x375 made from tiny COCO).
bench-decode: dev
	$(BIN)/python benchmarks/bench_decode.py

clean:
	rm -rf target $(VENV) python/recordforge/*.so
