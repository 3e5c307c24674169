# The project's interface: .ci/run and the README call these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo lint format typecheck test docs benchmark all

EXTRAS ?= dev,local,dspy,langchain,modal,docs,otel
# llama.cpp is built from source (about 8 minutes on 2 cores the first time; pip caches the wheel),
# for this machine's CPU (llama-cpp-python's default, -march=native): where the CPU has AVX-512,
# prompt reading is 1.4-1.9x faster than the portable AVX2 build (docs/benchmarks.md). For a
# wheel to share between machines: `CMAKE_ARGS=-DGGML_NATIVE=OFF make install`.

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing rlm-integrations[$(EXTRAS)] (the first build of llama.cpp takes several minutes) ..."
	$(BIN)/python -m pip install --progress-bar on -e ".[$(EXTRAS)]"
	touch $@

$(BIN)/.model: $(BIN)/.installed
	$(BIN)/rlm fetch-model
	touch $@

install: $(BIN)/.installed $(BIN)/.model

demo: install
	$(BIN)/rlm demo

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

benchmark: install
	$(BIN)/python benchmarks/repl.py

all: lint test
