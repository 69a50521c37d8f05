# thplab — newcomer entry points:
#   make lab    set up .venv (first time only) and open your working copies of the lessons
#   make test   set up .venv, make sure Chromium is there, run the test suite and the lessons
#
# Also: make reset LESSONS="03 glossary" (or LESSONS=all), make test-quick, make site,
# make lab-tracked, make notebooks, make longrun -- see `make help` and the README.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# First Python >= 3.11 found on PATH (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3 python; do \
	  if command -v $$p >/dev/null 2>&1 && \
	     $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	    command -v $$p; break; fi; done)

VENV      := .venv
VPY       := $(VENV)/bin/python
# What is installed: the lab extra for the lessons; the test extra on top for the tests.
LAB_STAMP := $(VENV)/.thplab-lab-installed
STAMP     := $(VENV)/.thplab-installed
OVERRIDES := etc/jupyterlab/overrides.json
LAB_OVERRIDES_STAMP := $(VENV)/.thplab-lab-overrides
CHROMIUM  ?= /usr/bin/chromium
PYTEST    := $(VPY) -m pytest

.PHONY: help lab lab-tracked reset test test-quick venv install lab-settings chromium test-tests \
	test-notebooks test-site site notebooks clean-venv longrun

help:
	@echo "make lab    - create .venv if needed and open your working copies of the lessons (lessons/)"
	@echo "              options for JupyterLab: make lab ARGS=\"--port 8899 --no-browser\""
	@echo "make test   - create .venv if needed and run all tests (incl. real-browser test and lessons)"
	@echo "make reset LESSONS=\"03 glossary\" - replace those working copies with the tracked lessons"
	@echo "              (LESSONS=all for every one; your edits in them are lost)"
	@echo "make test-quick - only the package tests, no browser, no lessons (about 2 minutes)"
	@echo "make site   - the course as a static website: build/site/index.html (SITE_OWNER=<GitHub"
	@echo "              account> for the Binder links; about 15 s after make test, else a minute)"
	@echo "(contributors) make lab-tracked - open notebooks/ itself, to edit the lessons"
	@echo "(contributors) make notebooks   - before committing lessons: clear outputs, record the"
	@echo "                          '# NBVAL_CHECK_OUTPUT' cells' outputs (etc/notebook_outputs.py)"

# ---------------------------------------------------------------- environment
$(VPY):
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: need Python >= 3.11 on PATH (or run: make PYTHON=/path/to/python3.11 ...)" >&2; \
	  exit 1; fi
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed (or the venv is new).
$(LAB_STAMP): pyproject.toml | $(VPY)
	@echo "Installing thplab with what the lessons need into $(VENV) (first time: about a minute)"
	$(VPY) -m pip install --quiet --progress-bar off -e '.[lab]'
	@touch $@

$(STAMP): pyproject.toml | $(VPY)
	@echo "Installing thplab with its lab, site and test dependencies into $(VENV) (first time: about a minute)"
	$(VPY) -m pip install --quiet --progress-bar off -e '.[lab,site,test]'
	@touch $@ $(LAB_STAMP)

$(LAB_OVERRIDES_STAMP): $(OVERRIDES) etc/jupyterlab/install_overrides.py | $(LAB_STAMP)
	$(VPY) etc/jupyterlab/install_overrides.py
	@touch $@

venv: $(VPY)
install: $(STAMP)
lab-settings: $(LAB_OVERRIDES_STAMP)

clean-venv:
	rm -rf $(VENV)

# ---------------------------------------------------------------- lab
# JupyterLab serves the repository (as Binder does) and opens lessons/, the learner's git-ignored
# copies: running and editing a lesson never touches notebooks/. Without a display there is no
# browser to start: print the URL instead of warning about it.
NO_BROWSER := $(if $(or $(DISPLAY),$(WAYLAND_DISPLAY),$(filter Darwin,$(shell uname -s))),,--no-browser)
JUPYTER_LAB = $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) \
	$(if $(filter 0,$(shell id -u)),--allow-root) $(NO_BROWSER) $(ARGS)

lab: $(LAB_STAMP) $(LAB_OVERRIDES_STAMP)
	@$(VPY) etc/working_copies.py sync
	$(JUPYTER_LAB) lessons/00-index.ipynb

reset:
	@if [ -z "$(LESSONS)" ]; then echo 'say which: make reset LESSONS="03 glossary" (or LESSONS=all)' >&2; exit 2; fi
	@$(VPY) etc/working_copies.py reset $(if $(filter all,$(LESSONS)),--all,$(LESSONS))

# Contributors: the tracked lessons themselves (commit them clean: make notebooks).
lab-tracked: $(LAB_STAMP) $(LAB_OVERRIDES_STAMP)
	$(JUPYTER_LAB) notebooks/00-index.ipynb

# ---------------------------------------------------------------- notebooks
# Run every lesson, store the expected output of its `# NBVAL_CHECK_OUTPUT` cells in
# tests/notebook_outputs/, and commit the lesson itself without any output.
notebooks: $(STAMP)
	$(VPY) etc/notebook_outputs.py record $(NOTEBOOKS)

# ---------------------------------------------------------------- site
# The course as a static website in build/site/ (etc/website/build.py): lessons with their
# outputs from build/executed/ when `make test-notebooks` left them there (about 15 s), else
# run here (about a minute). SITE_OWNER: the GitHub account in the Binder links.
site: $(STAMP)
	$(VPY) etc/website/build.py $(if $(SITE_OWNER),--owner $(SITE_OWNER))

# ---------------------------------------------------------------- tests
chromium:
	@if [ -x "$(CHROMIUM)" ]; then \
	  echo "chromium: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "chromium not found: installing Debian's chromium package"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
	  echo "error: $(CHROMIUM) is missing and this is not root." >&2; \
	  echo "       Install it with: sudo apt-get install chromium   (Debian/Ubuntu)," >&2; \
	  echo "       or point CHROMIUM=/path/to/chromium at another Chromium/Chrome." >&2; \
	  exit 1; fi

# All three phases always run; the target fails if any failed. On 2 cores: about 10 minutes.
test: $(STAMP) $(LAB_OVERRIDES_STAMP) chromium
	@start=$$(date +%s); rc=0; \
	echo "== make test: three phases, about 10 minutes on 2 cores"; \
	echo "== make test 1/3: package tests and the real-browser test (about 8 minutes)"; \
	$(MAKE) --no-print-directory test-tests || rc=1; \
	echo "== make test 2/3: every lesson under nbval (about 1 minute)"; \
	$(MAKE) --no-print-directory test-notebooks || rc=1; \
	echo "== make test 3/3: the course website, built from the lessons just run, in Chromium (under a minute)"; \
	$(MAKE) --no-print-directory test-site || rc=1; \
	echo "== make test: done in $$(( $$(date +%s) - start )) s"; \
	exit $$rc

test-tests: $(STAMP) $(LAB_OVERRIDES_STAMP)
	THPLAB_CHROMIUM=$(CHROMIUM) $(PYTEST) -q tests --ignore=tests/browser/test_site.py

# Builds the site from build/executed/ (test-notebooks leaves the lessons there) and opens it.
test-site: $(STAMP)
	THPLAB_CHROMIUM=$(CHROMIUM) $(PYTEST) -q -p no:cacheprovider -s tests/browser/test_site.py

test-quick: $(STAMP)
	$(PYTEST) -q -p no:cacheprovider tests --ignore=tests/browser

# Not part of `make test`: >= 100,000 random operations with check() after each (tens of
# minutes); figures in benchmarks/README.md.
longrun: $(STAMP)
	$(PYTEST) -q -p no:cacheprovider -s -m longrun tests/test_longrun.py

# pytest exits 5 when it collects nothing: only acceptable while notebooks/ has no notebook.
# nbval_executed (etc/website) keeps each lesson as it ran, in build/executed/, for `make site`.
test-notebooks: $(STAMP)
	@if [ -z "$$(find notebooks -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | head -n 1)" ]; then \
	  echo "notebooks/: no notebooks yet, nothing to run with nbval"; \
	else \
	  $(VPY) etc/notebook_outputs.py inject build/nbval && \
	  echo "$(PYTEST) -q -p nbval_executed --executed-dir build/executed --nbval-lax --nbval-current-env build/nbval" && \
	  PYTHONPATH=etc/website $(PYTEST) -q -p no:cacheprovider -p nbval_executed --executed-dir build/executed \
	    --nbval-lax --nbval-current-env build/nbval; \
	fi
