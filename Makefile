# The two commands of the README: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:5000
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: run test lint install install-dev bench bench-quick clean

run: install ## set up and serve on the embedded default (SQLite under instance/)
	$(BIN)/flask --app run db upgrade
	$(BIN)/gunicorn --workers $(WORKERS) --bind $(BIND) run:app  # limits and timeouts: gunicorn.conf.py

test: install-dev ## set up and run the linter and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

bench: install ## every benchmark scenario, jobservice against its peers (about 12 minutes; needs MariaDB and Redis)
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: install ## a reduced run of every benchmark scenario (about 3 minutes)
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
