# beagle's two set-up commands are `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CMD ?= beagle --help
PYTEST_ARGS ?=

.PHONY: install install-test demo test lint typecheck goldens run bench clean

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

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

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

# Every benchmark runs; the target fails at the end if any missed its target.
bench: install-test
	@status=0; for script in bench/bench_*.py; do \
	  echo "== $$script"; $(BIN)/python $$script || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
