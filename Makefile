# Two commands on a fresh machine: `make book` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help venv models book pdf serve notebooks test release validate browser sandbox clean

help:
	@echo "make book      build the book into _build/html (warnings are errors)"
	@echo "make pdf       the whole book as one PDF, rlhf-from-first-principles.pdf (offline, ≈ 6 min)"
	@echo "make serve     serve the built book at http://127.0.0.1:8000/ (PORT=... to change)"
	@echo "make notebooks regenerate the chapter notebooks the launch buttons open (book/**/<page>.ipynb)"
	@echo "make test      run the whole test suite (installs everything it needs)"
	@echo "make release   regenerate exercises/ from solutions/"
	@echo "make validate  solutions pass every test, released stubs fail every test"
	@echo "make bench-trl TRL 1.12's PPOTrainer vs ours, same work (builds .venv-trl once; ≈ 40 min)"
	@echo "make bench-trl-beyond  TRL 1.12's RLOO/GRPO/DPO trainers vs ours, same work (≈ 30 min)"

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

# The whole book as one PDF, offline: every page in one HTML file, printed by headless Chromium with the
# book's print stylesheet. Jupyter Book 1 writes the single page one folder down (book/intro.html) while its
# links to figures and styles are relative to the top folder: the copy puts it where they resolve.
PDF ?= rlhf-from-first-principles.pdf
pdf: $(STAMP) models browser
	$(VENV)/bin/jupyter-book build . --builder singlehtml --path-output _build/single
	cp _build/single/_build/singlehtml/book/intro.html _build/single/_build/singlehtml/book.html
	chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=120000 \
	  --print-to-pdf=$(PDF) _build/single/_build/singlehtml/book.html
	@test -s $(PDF) && echo "wrote $(PDF)"

# The book as readers get it from a web server (GitHub Pages): Python's own http.server, nothing installed.
PORT ?= 8000
serve:
	@test -f _build/html/index.html || { echo "error: no book in _build/html: run 'make book' first"; exit 1; }
	@echo "serving _build/html at http://127.0.0.1:$(PORT)/ (Ctrl-C stops)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# Binder and Colab open book/**/<page>.ipynb, generated from each MyST page with a Colab setup cell
# (repository.url in _config.yml). Commit them with the page; `make test` fails when one is out of date.
notebooks: $(STAMP)
	$(PY) -m autograder notebooks

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

# Grading runs each student's kernel in a bubblewrap sandbox (autograder/sandbox.py).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing Debian's bubblewrap for the grading sandbox"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
	  || { echo "error: bubblewrap is missing: install your distribution's 'bubblewrap' package (needs root)"; exit 1; }

test: $(STAMP) browser sandbox models
	$(PY) -m pytest

# TRL 1.12 (the last TRL with PPO) in its own venv, so its pins never touch the course's. The CPU torch wheel
# goes in first: an unpinned torch pulled in by trl would be the multi-GB CUDA build.
# Quick runs: make bench-trl BENCH_ARGS="--shapes tiny --iters 3 --warmup 1"
#             make bench-trl-beyond BENCH_ARGS="--shapes tiny --iters 2 --warmup 1"
# requests: importing trl.RLOOTrainer or trl.GRPOTrainer imports it (trl/generation/vllm_client.py, even without
# vLLM), and no package of the venv requires it
TRL_VENV  := .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed
BENCH_ARGS ?=

$(TRL_STAMP):
	@test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/pip install --quiet torch==2.13.0
	$(TRL_VENV)/bin/pip install --quiet trl==1.12.0 requests
	$(TRL_VENV)/bin/pip check
	@touch $(TRL_STAMP)

.PHONY: bench-trl bench-trl-beyond
bench-trl: $(STAMP) $(TRL_STAMP)
	HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 $(PY) scripts/bench_trl.py $(BENCH_ARGS)

bench-trl-beyond: $(STAMP) $(TRL_STAMP)
	HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 $(PY) scripts/bench_trl_beyond.py $(BENCH_ARGS)

clean:
	rm -rf _build test-artifacts autograder/course
