# ragcoder: `make demo` runs the main job on the embedded defaults, `make test` passes the tests.
# Both bootstrap everything they need (venv, model, Docker engine, sandbox image) and are idempotent.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RAGCODER := $(VENV)/bin/ragcoder
DEMO_MODEL ?= qwen2.5-coder-1.5b-instruct
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast bench lint format venv engine clean-venv

# The venv is rebuilt only when pyproject.toml changes. torch is pinned on the SAME pip line:
# a looser spec resolves to a multi-GB CUDA build (see docs/facts in shared/docs/facts.md).
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

# A Docker engine (started only where we may: root on Debian, e.g. CI) and the sandbox image.
engine: venv
	@bash sandbox/scripts/ensure_docker.sh
	@$(RAGCODER) sandbox build-image

demo: venv engine
	$(RAGCODER) models install $(DEMO_MODEL)
	$(RAGCODER) index --stdlib
	$(RAGCODER) batch examples/prompts.jsonl -o out/demo-results.jsonl --fresh --show-code --model $(DEMO_MODEL)

# In CI (CI set) a missing engine is an error; on a laptop without Docker the docker tests skip.
# The scientific image (numpy, pandas, matplotlib, ...; wheels from PyPI, about a minute once) is
# built here too, so its docker tests run rather than build it themselves.
test: venv
	@bash sandbox/scripts/ensure_test_tools.sh
	@bash sandbox/scripts/ensure_docker.sh && $(RAGCODER) sandbox build-image \
	  && $(RAGCODER) sandbox build-image --profile scientific \
	  || { if [ -n "$$CI" ]; then echo "error: no Docker engine or sandbox image for the tests" >&2; exit 1; fi; }
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not docker"

bench: venv engine
	@bash sandbox/scripts/ensure_test_tools.sh
	$(PY) bench/sandbox_bench.py
	$(RAGCODER) sandbox build-image --profile scientific && $(PY) bench/science_bench.py
	$(PY) bench/retrieval_bench.py
	$(PY) bench/llm_bench.py
	$(PY) bench/int8_bench.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
