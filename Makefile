# Two commands on a fresh machine: `make book` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help venv models book test release validate browser clean

help:
	@echo "make book      build the book into _build/html (warnings are errors)"
	@echo "make test      run the whole test suite (installs everything it needs)"
	@echo "make release   regenerate exercises/ from solutions/"
	@echo "make validate  solutions pass every test, released stubs fail every test"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

venv: $(STAMP)

# The tiny GPT-2 of chapters 3-4 is trained once (<= 60 s) and cached in ~/.cache/rlhf_course
# ($$RLHF_COURSE_CACHE): build it up front so no executed cell waits for it.
models: $(STAMP)
	$(PY) -m rlhf_course.tiny_lm

book: $(STAMP) models
	$(VENV)/bin/jupyter-book build . -W --keep-going --all

release: $(STAMP)
	$(PY) -m autograder release

validate: $(STAMP)
	$(PY) -m autograder validate

# The offline-rendering test drives Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the rendering tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "error: headless Chromium is missing: install Debian's 'chromium' package (needs root)"; exit 1; }

test: $(STAMP) browser models
	$(PY) -m pytest

clean:
	rm -rf _build test-artifacts autograder/course
