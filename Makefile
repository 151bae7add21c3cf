# The two commands of the README: `make run` and `make test`. Each sets itself up;
# `make test` also installs Debian's chromium and a Chinese font (apt-get) when they are
# missing, for the dashboard's browser tests and screenshots (tests/browser.py), and the
# MariaDB client headers that mysqlclient (the C MySQL driver) compiles against.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:5000
WORKERS ?= 2
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
# The dashboard's Chinese page, drawn in the screenshots: a CJK font, small (5 MB).
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
# mysqlclient builds from source (PyPI has no Linux wheel): it needs these headers and gcc.
MARIADB_HEADERS := /usr/include/mariadb/mysql.h

.PHONY: run test test-mysqlclient lint install install-dev bench bench-quick bench-dashboard clean

run: install ## set up and serve on the embedded default (SQLite under instance/)
	$(BIN)/flask --app run db upgrade
	$(BIN)/gunicorn --workers $(WORKERS) --bind $(BIND) run:app  # limits and timeouts: gunicorn.conf.py

test: install-dev ## set up and run the linter and the whole test suite (MariaDB's tests on both drivers)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-mysqlclient

test-mysqlclient: install-dev ## the MariaDB tests again, the service on mysqlclient (mysql+mysqldb)
	JOBSERVICE_TEST_MYSQL_DRIVER=mysqldb $(BIN)/python -m pytest -m mariadb $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev $(CHROMIUM) $(CJK_FONT)

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed $(MARIADB_HEADERS)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# Debian's, not a browser of Playwright's own (`playwright install` downloads one; that fails here).
# File targets: nothing runs, nothing prints, once they are there.
$(CHROMIUM):
	@$(call apt_install,chromium chromium-driver)
$(CJK_FONT):
	@$(call apt_install,fonts-wqy-microhei)
$(MARIADB_HEADERS):
	@$(call apt_install,libmariadb-dev pkg-config gcc)

define apt_install
if [ "$$(id -u)" = 0 ]; then sudo=; \
elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
else echo "$@ is missing and this is neither root nor has sudo: as root, run" \
	"apt-get install $(1); the browser tests skip until then (fail under CI=true)."; \
	exit 0; fi; \
echo "Installing Debian's $(1) (apt-get)"; \
$$sudo apt-get update -q && \
$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(1)
endef

bench: install ## every benchmark scenario, jobservice against its peers (about 25 minutes; needs MariaDB and Redis)
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: install ## a reduced run of every benchmark scenario (about 4 minutes)
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-dashboard: install ## every dashboard view against 10 000 jobs and 100 000 runs (BENCH_ARGS='--runs 1000000' for a million)
	$(BIN)/python -m bench.dashboard $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
