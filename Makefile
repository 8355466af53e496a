# gspn2_dense: two-command quick start.
#   make demo   set up (once) and run the demo main job on built-in demo data
#   make test   set up (once) and run the test suite
# Set-up steps leave stamp files in the virtual environment, so a second run skips them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONUNBUFFERED := 1
# PyPI downloads of the CUDA wheels (hundreds of MB each) break off now and then: pip resumes a
# broken download up to PIP_RESUME_RETRIES times (pip >= 25.1; older pips ignore the setting),
# and the download-heavy install steps are tried up to five times, waiting 30 s, 60 s, 120 s
# and 240 s in between (a proxy that cut a download off has often fetched the file by then).
export PIP_RETRIES := 10
export PIP_TIMEOUT := 60
export PIP_RESUME_RETRIES := 50
PIP_ATTEMPTS := 5
define with_retries
echo "$(1)"; \
for attempt in $$(seq 1 $(PIP_ATTEMPTS)); do \
	if $(1); then break; fi; \
	if [ "$$attempt" = "$(PIP_ATTEMPTS)" ]; then echo "==> failed $(PIP_ATTEMPTS) times: $(1)" >&2; exit 1; fi; \
	wait_s=$$((30 * 2 ** (attempt - 1))); \
	echo "==> attempt $$attempt of $(PIP_ATTEMPTS) failed; trying again in $$wait_s s" >&2; sleep $$wait_s; \
done
endef

STAMP_BASE := $(VENV)/.stamp-base
STAMP_MMCV := $(VENV)/.stamp-mmcv
STAMP_PKG := $(VENV)/.stamp-gspn2_dense

.PHONY: setup test demo clean-venv

setup: $(STAMP_PKG)

$(PY):
	@echo "==> [setup 1/4] creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(STAMP_BASE): | $(PY)
	@echo "==> [setup 2/4] installing torch 2.11.0, torchvision 0.26.0 and the build tools"
	@$(call with_retries,$(PIP) install --upgrade pip 'setuptools<70' wheel)
	@$(call with_retries,$(PIP) install torch==2.11.0 torchvision==0.26.0 ninja 'numpy<2.4')
	@touch $@

$(STAMP_MMCV): $(STAMP_BASE)
	@echo "==> [setup 3/4] installing mmcv 2.1.0 with ops (a wheel from PIP_FIND_LINKS or pip's"
	@echo "    cache when there is one; otherwise a source build of about 25 minutes on 2 cores)"
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation mmcv==2.1.0
	@touch $@

$(STAMP_PKG): $(STAMP_MMCV) setup.py
	@echo "==> [setup 4/4] installing gspn2_dense (editable) and the pinned stack"
	@$(call with_retries,$(PIP) install -e '.[dev]')
	@touch $@
	@echo "==> set-up complete ($(VENV))"

test: setup
	@echo "==> running the test suite"
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	@echo "==> running the demo main job"
	$(PY) tools/demo.py

clean-venv:
	rm -rf $(VENV)
