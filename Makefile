# beagle's two set-up commands are `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CMD ?= beagle --help
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install install-test install-bench demo test lint typecheck goldens run bench bench-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever the project or its pinned versions change. pyproject.toml states the
# ranges beagle supports; constraints.txt pins the versions tested here.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(VENV)/.installed $@

# The benchmark's extra: Keras 3 (on its JAX backend) for the comparison rows.
$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(VENV)/.installed $(VENV)/.installed-test $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-bench: $(VENV)/.installed-bench

demo: install
	$(BIN)/beagle run specs/digits_cnn.yaml

lint: install-test
	$(BIN)/ruff check beagle tests bench examples
	$(BIN)/ruff format --check beagle tests bench examples

typecheck: install-test
	$(BIN)/mypy beagle generated

goldens: install-test
	$(BIN)/beagle gen --check specs/*.yaml

# pytest exits 5 when it collects nothing: that is a failure here, as any non-zero status.
test: lint typecheck goldens
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: install-test
	. $(BIN)/activate && $(CMD)

# One benchmark (docs/performance.md): beagle against a bare jitted loop and Keras 3 on W0,
# W1 and W2, about 15-20 minutes on the reference CPU (estimated); `make bench BENCH_ARGS=--quick` is a
# short smoke run. The target fails when a measured target is missed (not with --quick).
bench: install-bench
	$(BIN)/python bench/bench_speed.py $(BENCH_ARGS)

# Every benchmark script in bench/ (each prints its own targets); fails if any missed one.
bench-all: install-bench
	@status=0; for script in bench/bench_*.py; do \
	  echo "== $$script"; $(BIN)/python $$script || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
