# Two commands matter: `make demo` (set up, then run the smoke reproduction) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED ?= 0

.PHONY: setup demo test test-fast test-portability bench lab clean-reports

setup: $(STAMP)

$(STAMP): environment.yml pyproject.toml tools/pip_requirements.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PYTHON) tools/pip_requirements.py environment.yml > $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(BIN)/ssvp reproduce --profile smoke --jobs 2

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The fast suite under other numeric conditions than `make test`'s: one thread instead of all cores; torch's portable
# ATen kernels instead of the CPU's widest SIMD ones; MKL's reproducible code path for float32 matrix products and
# oneDNN limited to AVX2 (bf16 emulated where the CPU has native bf16), which give other last bits than the default
# kernels, as another CPU would; the tests in reverse order. A test that compares floats bit for bit across thread
# counts or kernels, or passes only in the order `make test` runs it, fails here. Variables a build does not use
# (no MKL, no oneDNN) are ignored.
PORTABILITY_ENV := OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=AVX2
test-portability: setup
	$(PORTABILITY_ENV) $(BIN)/python -c "import torch; print('portability run:', torch.get_num_threads(), \
		'thread(s), ATen CPU kernels', torch.backends.cpu.get_cpu_capability())"
	$(PORTABILITY_ENV) $(BIN)/python -m pytest -q -m "not slow" --reverse

bench: setup
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/infer.py
	$(BIN)/python bench/train_cache.py

lab: setup
	$(BIN)/jupyter lab --config=jupyter_server_config.py notebooks/

clean-reports:
	rm -rf reports/smoke
