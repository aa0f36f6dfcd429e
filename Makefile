# hexa-event for Python: the two commands a fresh clone needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
S ?=

.PHONY: venv demo test lint quick unit services services-down bench bench-profile interop-go soak clean

$(STAMP): pyproject.toml tools/hexa_event_services/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e tools/hexa_event_services
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples tools
	$(VENV)/bin/ruff format --check src tests benchmarks examples tools
	$(VENV)/bin/mypy

# The loop while coding (under a minute, no services): layers, the core, and the conformance
# suite on memory and SQLite, with a tenth of the fuzz examples, in 4 processes (most of
# these tests wait on timers, so 4 fit on 2 cores).
quick: $(STAMP)
	HEXA_FUZZ_EXAMPLES=1000 $(VENV)/bin/pytest -q -x -n 4 -m "not postgres" \
		tests/test_layers.py tests/core tests/drivers/memory tests/drivers/sql/test_conformance_sqlite.py

# Unit tests and the conformance suite on the memory driver: no services needed.
unit: $(STAMP)
	$(VENV)/bin/pytest -q -m "not kafka and not pulsar and not nats and not stan and not postgres and not kafka_cluster and not kafka_secure and not postgres_auth and not nats_cluster and not soak"

# What CI runs (.ci/run): lint, the services, then every test in two phases, each reporting
# its skips, failures and 25 slowest tests; lint and both phases always run, and the
# target fails if any failed. Lint runs beside phase 1 (its output is printed after it). Phase 1: every
# test but phase 2's, in TEST_WORKERS processes (most tests wait on brokers and timers, not
# on CPU); the tests of one on-demand service (kafka-cluster...) share a worker
# (tests/conftest.py). Phase 2, one test at a time with nothing beside it: the tests that
# stop, restart or kill a shared broker (marker `disruptive`), the conformance tests whose
# verdict is a latency bound (marker `timing`), the three-node Kafka cluster's tests (three
# JVMs starting beside phase 1 missed their 120 s readiness bound) and the soak (its event
# rate needs the machine). CONTRIBUTING.md says which tests belong where.
TEST_WORKERS ?= 4
SERIAL_TESTS := disruptive or timing or kafka_cluster or soak
PYTEST_REPORT := -q -ra --durations=25
TEST_PHASE1 := $(VENV)/bin/pytest $(PYTEST_REPORT) -n $(TEST_WORKERS) --dist loadgroup -m "not ($(SERIAL_TESTS))"
TEST_PHASE2 := $(VENV)/bin/pytest $(PYTEST_REPORT) -m "$(SERIAL_TESTS)"
test: $(STAMP)
	@lint=0; phase1=0; phase2=0; lint_log=$$(mktemp); \
	$(MAKE) --no-print-directory lint >$$lint_log 2>&1 & lint_pid=$$!; \
	scripts/services up $(S) || { wait $$lint_pid; cat $$lint_log; rm -f $$lint_log; exit 1; }; \
	echo '== make test, phase 1 of 2 (in parallel): $(TEST_PHASE1)'; \
	$(TEST_PHASE1) || phase1=$$?; \
	wait $$lint_pid || lint=$$?; \
	echo '== make test, lint (ran beside phase 1): make lint'; cat $$lint_log; rm -f $$lint_log; \
	echo '== make test, phase 2 of 2 (one at a time): $(TEST_PHASE2)'; \
	$(TEST_PHASE2) || phase2=$$?; \
	echo "== make test: lint exit $$lint, phase 1 exit $$phase1, phase 2 exit $$phase2 (0: passed)"; \
	test $$lint -eq 0 && test $$phase1 -eq 0 && test $$phase2 -eq 0

services:
	scripts/services up $(S)

services-down:
	scripts/services down $(S)

# Benchmarks: each runs the raw client and hexa-event in the same run and prints the ratio.
# `make bench [ROUNDS=5]` (3 alternating rounds by default, about 15 minutes) also writes
# docs/bench.json, docs/bench.png and the table of docs/performance.md;
# FastStream and matplotlib go to benchmarks/.bench-venv (made on first use), never our deps.
bench: $(STAMP)
	scripts/services up kafka postgres
	cd benchmarks && ../$(PY) run.py --rounds $(or $(ROUNDS),3)

# Per-event cost by layer (cProfile) of the memory end-to-end and Kafka consume paths, then
# the per-event floor of any receiver keeping the contract (the best ratio it allows).
bench-profile: $(STAMP)
	scripts/services up kafka
	cd benchmarks && ../$(PY) profile.py && ../$(PY) floor.py

# Soak (not part of `make test`, whose soak test runs 2 minutes): SOAK_RATE events/s over
# SOAK_ENGINES for SOAK_MINUTES, OpenTelemetry SDK on (SOAK_OTEL= turns it off), every
# SOAK_OUTBOX_EVERY-th batch through an outbox (0: none); judged by tests/services/soak_rule.py
# (docs/soak.md); writes the plot to SOAK_PLOT and the JSON report beside it. On the soak's
# own brokers kafka-soak and nats-soak (SOAK_BROKERS=shared: the shared kafka and nats).
SOAK_MINUTES ?= 60
SOAK_RATE ?= 600
SOAK_ENGINES ?= sqlite,kafka,jetstream
SOAK_OTEL ?= --otel
SOAK_OUTBOX_EVERY ?= 10
SOAK_PLOT ?= soak.png
SOAK_BROKERS ?= dedicated
soak: $(STAMP)
	scripts/services up $(if $(filter shared,$(SOAK_BROKERS)),kafka nats,kafka-soak nats-soak)
	$(PY) tests/services/soak_runner.py --brokers $(SOAK_BROKERS) \
		--minutes $(SOAK_MINUTES) --rate $(SOAK_RATE) \
		--engines $(SOAK_ENGINES) $(SOAK_OTEL) --outbox-every $(SOAK_OUTBOX_EVERY) \
		--plot $(SOAK_PLOT) --json $(SOAK_PLOT:.png=.json)

# Go interop on Kafka: a sarama program speaking Go hexa-event's wire format, both directions.
interop-go: $(STAMP)
	scripts/services up kafka
	$(VENV)/bin/pytest -q tests/interop/go

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
