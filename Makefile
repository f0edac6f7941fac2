# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv if missing and installs what it needs.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

demo: $(STAMP)
	$(PY) -m muonlab bench demo

clean:
	rm -rf $(VENV) runs
