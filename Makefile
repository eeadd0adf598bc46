# cjo — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SERVICES := identity content orchestration delivery analytics decisioning
# Type-checked with the services; an HTTP process (the web console), not a gRPC service.
CONSOLE  := console
STAMP  := $(VENV)/.installed-stamp
# The last released contract: `make lint` refuses proto changes that would break its clients
# (protos/releases/README.md says how to cut the next one).
PROTO_RELEASE := 0.1.0

.PHONY: help install protos lint test test-fast e2e run bench migration clean

help:
	@echo "make run        start all six services and the web console (:8088) with a development workspace"
	@echo "make test       install everything needed and run the whole test suite"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make lint       ruff, mypy, buf lint and buf breaking against the last release"
	@echo "make protos     regenerate Python stubs from protos/"
	@echo "make bench      run every benchmark (make bench-content ARGS='--profiles 10000' for one)"
	@echo "make migration SERVICE=content MSG='add x'   new Alembic revision for a service"

# The virtualenv is rebuilt whenever the pinned requirements change.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cjo needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# The console's browser tests drive Debian's Chromium (Playwright's own browsers cannot be
# downloaded here). Idempotent; needs root, as on development and CI machines.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# The event bus tests (CJO_EVENT_BUS) run a private JetStream server for the broker restart;
# Debian's nats-server. The shared one at 127.0.0.1:4222 is started by .ci/run if it is down.
NATS_SERVER := /usr/sbin/nats-server

$(NATS_SERVER):
	command -v nats-server >/dev/null || (apt-get update -qq && apt-get install -y -qq nats-server)

install: $(STAMP) $(CHROMIUM) $(NATS_SERVER)

protos: install
	$(BIN)/python -m cjo_platform.protogen

lint: install
	$(BIN)/ruff check libs services tests examples
	@# mypy cannot follow setuptools' package-dir mapping (services/x is imported as cjo_x): a
	@# folder of links gives it the import names, so every service sees the others' types.
	@mkdir -p build/mypy && for s in $(SERVICES) $(CONSOLE); do ln -sfn ../../services/$$s build/mypy/cjo_$$s; done
	$(BIN)/mypy -p cjo_platform -p cjo_client -p cjo_cli $(addprefix -p cjo_,$(SERVICES) $(CONSOLE))
	$(BIN)/buf lint protos
	$(BIN)/buf breaking protos --against protos/releases/$(PROTO_RELEASE).binpb

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not e2e"

e2e: install
	$(BIN)/python -m pytest -m e2e

# The services need only the virtualenv: not the test suite's Chromium and nats-server, whose
# apt-get install needs root.
run: $(STAMP)
	$(BIN)/python -m cjo_platform.devrun

# Each benchmark prints its own figures; run one with e.g. `make bench-content`. Sizes are the
# issues' (1,000,000 analytics facts take ~10 minutes per database); pass ARGS to change them.
BENCHES := limits rpc throughput latency outbox bus identity ingest_groups ingest_batches content orchestration lone_event receivers delivery analytics decisioning retention

bench: $(addprefix bench-,$(BENCHES))

bench-%: install
	$(BIN)/python tests/benchmarks/$*.py $(ARGS)

migration: install
	@test -n "$(SERVICE)" -a -n "$(MSG)" || (echo "usage: make migration SERVICE=<service> MSG='what changed'"; exit 2)
	$(BIN)/python -m cjo_platform.db.revision cjo_$(SERVICE) "$(MSG)"

clean:
	rm -rf $(VENV) .cjo .pytest_cache .mypy_cache .ruff_cache
