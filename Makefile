# Entry points for people and CI.  Everything generated lives in the cache
# ($HARNESS_CACHE, default ~/.cache/harness) or in .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-kernel lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The project's own tests.  Target tests run when a 2.6.20 source is in the
# cache (or $$HARNESS_KERNEL_SRC); otherwise they skip, saying how to get one.
test: venv
	$(BIN)/pytest tests

# Obtain and verify the kernel source (downloads it when needed), build the
# default kernel and run the target tests.
test-kernel: venv
	$(BIN)/harness source
	$(BIN)/harness build --config default
	$(BIN)/pytest tests/target

lint: venv
	$(BIN)/ruff check harness tests bench
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache results
	@echo "The cache is kept: remove $${HARNESS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/harness} by hand to reclaim it."
