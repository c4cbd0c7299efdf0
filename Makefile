# The two entry points of README.md. Everything is installed into $(VENV) from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH := $(VENV)/bin/bench
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP)

# A first look in under five minutes on 2 cores (README): four methods on the synthetic corpus at the
# `demo` profile, two worker processes of one torch thread each, then the board and the trade-off
# figure (plots/). `bench run --methods all --grid default --dataset synthetic --profile quick` runs
# every method instead.
DEMO_METHODS ?= vae,bn-vae,fb-vae,dg-vae
demo: $(STAMP)
	$(BENCH) run --methods $(DEMO_METHODS) --grid default --dataset synthetic --profile demo --workers 2 --quiet
	$(BENCH) leaderboard --dataset synthetic --profile demo
	$(BENCH) plot tradeoff --dataset synthetic --profile demo --out plots

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
