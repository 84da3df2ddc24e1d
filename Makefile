# ClinicBridge developer commands. `make run` and `make test` work on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/clinicbridge
PYTEST := $(PY) -m pytest

.PHONY: install run test test-sqlite test-postgres lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: install
	$(CLI) db upgrade
	$(CLI) demo >/dev/null
	$(CLI) serve

# The two runs are independent (own databases, servers on free ports), so they run side
# by side, one per core; each run's output is printed whole when it ends.
test: install
	scripts/install-system-deps.sh
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

test-sqlite: install
	@echo "== test suite on SQLite" >&2
	$(PYTEST)

test-postgres: install
	@echo "== test suite on PostgreSQL" >&2
	scripts/with-postgres.sh $(PYTEST)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

# Benchmarks print JSON and compare against a baseline measured in the same run.
bench: install
	BENCH=1 scripts/install-system-deps.sh
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/startup.py
	$(PY) bench/http_baseline.py
	$(PY) bench/vault.py
	$(PY) bench/audit.py
	$(PY) bench/jobs_sqlite.py
	scripts/with-postgres.sh $(PY) bench/jobs_postgres.py
	scripts/with-postgres.sh $(PY) bench/jobs_latency.py
	$(PY) bench/webhook_ingest.py
	$(PY) bench/availability.py
	$(PY) bench/voice_tools.py
	$(PY) bench/booking_create.py
	$(PY) bench/template_render.py
	$(PY) bench/send_pipeline.py
	$(PY) bench/reminders_schedule.py
	$(PY) bench/balance.py
	$(PY) bench/payment_webhook.py
	$(PY) bench/calendar_sync.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
