# Two entry points (README): `make repro` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup data repro readme test test-fast bench lint clean-runs image

# Python writes its bytecode caches under make: the venv is installed without them (below), and with
# PYTHONDONTWRITEBYTECODE set (Docker images often set it) every stage process compiled torch's modules
# again, ~4 s each.
unexport PYTHONDONTWRITEBYTECODE

# --no-compile: byte-compiling every module of torch's CUDA build (5.5 GB) took ~35 of the install's ~95 s on
# the 2-core AMD EPYC; Python compiles the few hundred a run imports on first use instead (~7 s, once).
$(BIN)/cs-repro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e ".[test]"
	touch $@

# The fused CPU soft-mask kernel is compiled once per machine (~12 s); without a compiler soft masks
# fall back to ATen ops, so a failed build does not stop set-up. The stamp spares a no-op `make repro`
# the check (it imports torch: ~2 s).
setup: $(VENV)/.kernel-checked data

$(VENV)/.kernel-checked: $(BIN)/cs-repro src/cs_repro/kernels/soft_mask.cpp src/cs_repro/kernels/__init__.py
	@$(BIN)/cs-repro build-kernel || echo "continuing without the fused kernel (soft masks use ATen ops)"
	@touch $@

# Fashion-MNIST for the quick profile comes from Debian's package (offline).
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) ; } || \
	  { echo "Fashion-MNIST missing: apt-get install dataset-fashion-mnist, or set data.root in params.yaml"; exit 1; }

# The params check first: every rule, whatever the section, before any training (and before DVC expands
# foreach/matrix, whose own errors name no key). It imports torch (~2 s), so a stamp skips it while
# neither params.yaml nor the code changed. Then the pipeline, several stages at a time
# (`cs-repro parallel`: one per `cpu.threads` cores, or one per GPU; the same outputs as `dvc repro`).
$(VENV)/.params-checked: $(BIN)/cs-repro params.yaml $(shell find src -name '*.py')
	cs-repro params --check params.yaml
	@touch $@

repro: setup $(VENV)/.params-checked
	cs-repro parallel
	cs-repro readme
	@echo "Done. Figures and REPORT.md: figures/ ; tables: figures/tables/ ; metrics: dvc metrics show"

# The README's results block from the committed metrics (make repro does it too).
readme: setup
	cs-repro readme

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/mask_overhead.py

lint: setup
	$(BIN)/hadolint Dockerfile

# N stages at a time on this machine (one GPU, or a share of the cores, each): make parallel J=4
.PHONY: parallel
parallel: setup
	cs-repro parallel -j $(or $(J),2)

# The Docker image (docker/README.md), naming the commit it is built from: results made in it record that
# commit, not the image's own one-commit repository. BASE_IMAGE=... builds on another base (the tests' stand-in).
image:
	docker build --build-arg CS_REPRO_COMMIT=$$(git describe --always --dirty=+changes --abbrev=7) \
	  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t cs-repro .
