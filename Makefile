# The targets CI, the README and developers run. `make test` is the whole check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FUZZ_SECONDS ?= 60

.PHONY: demo install dev test lint rust-test py-test fuzz bench bench-beam bench-coco bench-inspect bench-read bench-table bench-decode clean

# Quick start 1: install the package (release build of the Rust core) and run the demo.
demo: install
	$(BIN)/recordforge demo

install: $(BIN)/python
	$(BIN)/pip install --quiet ".[images,tf]"

# Development environment: editable install with the test, TensorFlow, image, table, Beam,
# cloud-path, PyTorch and JAX/Grain extras (the torch / grain adapters' tests run in CI).
dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,tf,images,table,beam,cloud,torch,jax]"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Quick start 2: everything CI checks.
test: dev lint rust-test py-test fuzz

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest recordforge._core
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test:
	cargo test -p recordforge-core

py-test:
	$(BIN)/python -m pytest -q

fuzz:
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

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

# JPEG records read + decoded to uint8 (simplejpeg on threads) vs tf.data + decode_jpeg, the
# JPEG decoder alone and Pillow (2,000 images of 500x375 made from tiny COCO).
bench-decode: dev
	$(BIN)/python benchmarks/bench_decode.py

clean:
	rm -rf target $(VENV) python/recordforge/*.so
