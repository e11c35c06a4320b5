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
	$(BIN)/pytest

# The main job: system packages (installed when run as root, else the exact
# command is printed), the kernel source (downloaded and verified when
# needed), then the rcfs suite on the default kernel, as posted and with the
# fixes; prints a summary and the path of the HTML report.
test-kernel: venv
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/harness doctor --install; else $(BIN)/harness doctor; fi
	$(BIN)/harness source
	$(BIN)/harness test --config default

lint: venv
	$(BIN)/ruff check harness tests bench
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache results
	@echo "The cache is kept: remove $${HARNESS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/harness} by hand to reclaim it."
