# One Blueprint. `make demo` runs the platform on the demo city; `make test` runs the tests.
# Both install what is missing first: Debian packages (when root) and a virtualenv in .venv/.

VENV   := .venv
PY     := $(VENV)/bin/python
BP     := $(VENV)/bin/blueprint
STAMP  := $(VENV)/.installed
PYTHON ?= $(shell command -v python3.11 || command -v python3)

.PHONY: demo test install system-deps lint bench clean-db

demo: install
	$(BP) db up
	$(BP) demo
	$(BP) conflicts run
	$(BP) synthesize
	for zone in DZ-01 DZ-02 DZ-03 DZ-04; do $(BP) assess $$zone || exit 1; done
	@echo "seeding the map's tiles in the background while the server starts (log: .blueprint/tiles-seed.log)"
	mkdir -p .blueprint; $(BP) tiles seed > .blueprint/tiles-seed.log 2>&1 & $(BP) serve

test: install lint
	$(BP) catalogue validate
	$(PY) -m pytest

install: system-deps $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Python's venv module, PostgreSQL 15 + PostGIS 3 for the embedded database; for the tests also
# Chromium and a CJK font (the browser tests). BROWSER is set for `make test` and its prerequisites.
test: BROWSER := yes
system-deps:
	@missing=""; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	sharedir=$$( (pg_config --sharedir || /usr/lib/postgresql/15/bin/pg_config --sharedir) 2>/dev/null ); \
	[ -f "$${sharedir:-/usr/share/postgresql/15}/extension/postgis.control" ] || missing="$$missing postgresql-15-postgis-3"; \
	[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || command -v pg_ctl >/dev/null || missing="$$missing postgresql-15"; \
	if [ -n "$(BROWSER)" ]; then \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  [ -n "$$(ls /usr/share/fonts/truetype/wqy 2>/dev/null)" ] || missing="$$missing fonts-wqy-microhei"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing. Install them (sudo apt-get install$$missing) or use environment.yml with conda."; \
	    exit 1; \
	  fi; \
	fi

lint: install
	$(VENV)/bin/ruff check layers spatial api viewer tests bench

bench: install
	$(VENV)/bin/pip install --quiet -e '.[bench]'
	@command -v ogr2ogr >/dev/null || (apt-get update -qq && apt-get install -y -qq gdal-bin >/dev/null)
	$(PY) bench/ingest.py
	$(PY) bench/overlay.py
	$(PY) bench/site.py
	$(PY) bench/tiles.py

clean-db:
	-$(BP) db down
	rm -rf .blueprint
