# classbench: `make demo` runs the main job on built-in data; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch pinned to the releases this machine's pip constraints allow (torch<=2.14.1); any torch>=2.4 works.
# --no-cache-dir: where torch comes from PyPI it is a CUDA build of several GB; no second copy in pip's cache.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint clean

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

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
