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

# Every method at its default setting (--grid paper runs the paper grids: 41 runs).
demo: $(STAMP)
	$(BENCH) run --methods all --grid default --dataset synthetic --profile quick
	$(BENCH) leaderboard --dataset synthetic --profile quick

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
