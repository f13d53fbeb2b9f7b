# classbench: `make demo` runs the main job on built-in data; `make test` runs the whole suite;
# `make test-floor` installs the lowest supported versions (constraints-floor.txt) and smoke-tests them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch pinned to the releases this machine's pip constraints allow (torch<=2.14.1); any torch>=2.4 works.
# --no-cache-dir: where torch comes from PyPI it is a CUDA build of several GB; no second copy in pip's cache.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-floor lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c "import shutil; f = shutil.disk_usage('.').free / 2**30; f < 8 and print(f'warning: {f:.1f} GB free here; PyTorch from PyPI (a CUDA build) needs about 6 GB')"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-cache-dir $(TORCH_PINS) || $(PY) -m pip install -q --no-cache-dir "torch>=2.4" "torchvision>=0.19"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/classbench demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider

# The dependency floors: Python 3.10 (the lowest requires-python) with every direct dependency at its floor.
# torch 2.4 comes from PyPI as a CUDA build (about 2.6 GB of wheels, 5.5 GB installed; it runs on the CPU): the
# first run downloads it (about 2.5 min here), later runs reuse the venv (pip changes only what the files changed).
FLOOR_VENV ?= .venv-floor
FLOOR_PYTHON ?= $(shell command -v python3.10 >/dev/null && python3.10 -c "" 2>/dev/null && echo python3.10 || \
	ls -d $(HOME)/.pyenv/versions/3.10*/bin/python3.10 2>/dev/null | tail -n 1)

$(FLOOR_VENV)/.installed: pyproject.toml constraints-floor.txt
	@test -n "$(FLOOR_PYTHON)" || { echo "test-floor needs Python 3.10 (set FLOOR_PYTHON=/path/to/python3.10)"; exit 2; }
	test -x $(FLOOR_VENV)/bin/python || $(FLOOR_PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --no-cache-dir -c constraints-floor.txt .
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pip install -q --no-deps --force-reinstall .
	@work=$$(mktemp -d) && $(FLOOR_VENV)/bin/python .ci/floor_smoke.py $$work && rm -rf $$work

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) $(FLOOR_VENV) runs .pytest_cache
