# The two commands a newcomer needs: `make demo` and `make test` (both install what they need).
PYTHON ?= python3
VENV := .venv
EVENTS ?= 20000

.PHONY: demo test venv lint

# What the demo needs: the base install (no torch: the demo serves its committed lstm_lgbm,
# its LSTM part in numpy).
$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e .
	touch $@

# Linters and test tools on top (`make test` runs .ci/run, which installs dev and forecast).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/shelfcast demo --events $(EVENTS) --json out.json

test:
	bash .ci/run

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m mypy
