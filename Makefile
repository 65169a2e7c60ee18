# espnet_mtla: `make test` and `make demo` install whatever is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install system-deps test demo bench clean-venv

install: $(STAMP) system-deps

# Re-runs only when the pinned requirements or the package metadata change.
$(STAMP): requirements.txt setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "pip<25"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q "ctc-segmentation==1.7.5" || echo "note: ctc-segmentation did not build (it needs a C compiler and Python's headers): long-form word times (--word_times) are unavailable, the rest works" >&2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

system-deps:
	@bash utils/install_system_deps.sh

# Parallel workers (pytest-xdist, at most 4; the 15 slowest tests listed, to keep the whole under
# 30 minutes on 2 cores), then the timed tests alone.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 4 ? 4 : (n < 2 ? 2 : n) )))
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal --durations=15 -m "not serial" test
	$(PY) -m pytest -q -m serial test

# The main job: the synthetic mini ASR recipe end to end, MTLA then MHA (same data, tokens and
# statistics; only the attention type differs), with a 10-minute recording of the test set decoded
# as one long recording, then the RESULTS.md table.
DEMO := egs2/mini_synth/asr1
demo: install
	cd $(DEMO) && ./run.sh --attention mtla --stage 1 --stop_stage 10 --long_form_minutes 10
	cd $(DEMO) && ./run.sh --attention mha --stage 7 --stop_stage 10 --long_form_minutes 10
	@echo; cat $(DEMO)/RESULTS.md

# The reference implementation (pip mtla==0.3.2) goes into its own folder, never the venv:
# its wheel also installs top-level `experiments` and `assets` packages.
bench: install
	test -f .venv-bench/mtla/mtla/MTLA.py || $(PY) -m pip install -q --no-deps --target .venv-bench/mtla mtla==0.3.2
	$(PY) -m espnet_mtla.bench.attention --reference --out-dir docs/bench

clean-venv:
	rm -rf $(VENV)
