# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test lint docs bench bench-check clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(PY) -m snn_ostl demo

test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q --ignore=tests/test_docs_html.py  # (checks the built pages: make docs)

lint: venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

docs: venv
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	$(PY) -m pytest -q tests/test_docs_html.py  # the built pages: no error boxes, raw TeX, CDN

bench: venv
	$(PY) -m snn_ostl bench

bench-check: venv
	$(PY) -m snn_ostl bench --check

clean:
	rm -rf docs/_build docs/auto_tutorials docs/generated runs
