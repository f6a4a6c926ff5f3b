VENV ?= .venv
PY := $(VENV)/bin/python
# make test-min: the lowest versions pyproject.toml allows, in their own venv
# (docs/supported-versions.md). uv (a PyPI wheel, pinned) resolves them; it lives in that venv.
VENV_MIN ?= .venv-min
UV_VERSION ?= 0.13.9
HOST ?= 127.0.0.1
PORT ?= 8000
# make run WORKERS=4: several uvicorn workers (they share the dev issuer's key via .dev/).
WORKERS ?= 1

.PHONY: install test test-min lint format typecheck run bench fuzz docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import jose.backends; assert 'cryptography' in jose.backends.RSAKey.__module__, jose.backends.RSAKey"
	touch $@

install: $(VENV)/.installed

# Four processes on two cores: the suite waits on retries, timeouts and servers more than it
# computes. A test file stays in one process (its module fixtures, servers, start once), and
# files run in conftest's order, slowest first (--no-loadscope-reorder), so no worker ends on
# a long one alone. Measured on 2 idle cores: -n 2 56 s, -n 3 50 s, -n 4 44 s.
PYTEST_WORKERS ?= 4
test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Line coverage of the library (pytest-cov, in the dev extra).
.PHONY: coverage
coverage: install
	$(PY) -m pytest -q --cov=entra_guard --cov-report=term-missing

# Every declared requirement (dependencies, and every extra: dev, testing, prometheus, ...)
# at its floor (--resolution lowest-direct); what they pull in at its newest, as a user
# pinning our floors would get. A new extra or dev dependency is picked up by itself.
$(VENV_MIN)/.installed: pyproject.toml
	rm -rf $(VENV_MIN)
	python3 -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(VENV_MIN)/bin/uv pip install --quiet --python $(VENV_MIN)/bin/python \
		--resolution lowest-direct -r pyproject.toml --all-extras
	$(VENV_MIN)/bin/uv pip install --quiet --python $(VENV_MIN)/bin/python --no-deps -e .
	$(VENV_MIN)/bin/python -c "import jose.backends; assert 'cryptography' in jose.backends.RSAKey.__module__, jose.backends.RSAKey"
	touch $@

test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/uv pip list --python $(VENV_MIN)/bin/python
	ENTRA_GUARD_LOWEST_VERSIONS=1 $(VENV_MIN)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check src tests sample_app bench examples
	$(VENV)/bin/ruff format --check src tests sample_app bench examples
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests sample_app bench examples
	$(VENV)/bin/ruff check --fix src tests sample_app bench examples

# Demo API with the built-in dev issuer (no Azure tenant needed; loopback HOST only).
# --h11-max-incomplete-event-size lets a 16 KiB token through uvicorn's header limit;
# WEBSOCKETS_MAX_LINE_LENGTH does the same for WebSocket handshakes (websockets' own
# parser, 8 KiB per header line by default, drops longer ones without an answer).
run: install
	WEBSOCKETS_MAX_LINE_LENGTH=65536 ENTRA_DEV_MODE=1 ENTRA_TENANT_ID=$${ENTRA_TENANT_ID:-11111111-1111-1111-1111-111111111111} \
	ENTRA_CLIENT_ID=$${ENTRA_CLIENT_ID:-22222222-2222-2222-2222-222222222222} \
	SAMPLE_FINANCE_GROUP_ID=$${SAMPLE_FINANCE_GROUP_ID:-33333333-3333-3333-3333-333333333333} \
	ENTRA_AUTH_CONTEXTS=$${ENTRA_AUTH_CONTEXTS:-'{"approve-payment":"c1"}'} \
	ENTRA_RESOURCE_METADATA=$${ENTRA_RESOURCE_METADATA:-true} \
	SAMPLE_REPORTS_CLIENT_APPS=$${SAMPLE_REPORTS_CLIENT_APPS:-44444444-4444-4444-4444-444444444444} \
	$(VENV)/bin/uvicorn sample_app.main:app --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		--h11-max-incomplete-event-size 65536

# Benchmarks (see bench/__main__.py): wrk from Debian when missing (else a
# Python load generator); server venvs bench/.venv-server (entra-guard) and bench/.venv-peer
# (fastapi-azure-auth 5.3.0, the peer), same server stack in both (bench/peer_setup.py).
bench: install
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null 2>&1; } || \
		echo "bench: wrk could not be installed; using the Python load generator"
	$(PY) -m bench.peer_setup
	$(PY) -m bench $(BENCH_ARGS)

# Token fuzzing (docs/security.md): FUZZ_N mutated tokens through EntraAuth.authenticate,
# in process; prints "fuzz: N tried, C crashes, A wrongly accepted, S slow", fails on any.
FUZZ_N ?= 100000
fuzz: install
	$(PY) -m tests.fuzz $(FUZZ_N)

# The manual (docs/, mkdocs.yml) into site/: MkDocs Material, the API reference from the
# docstrings (mkdocstrings). --strict: any warning fails, broken links and anchors included.
# Its tools (docs/requirements.txt, exact pins) go into .venv, not into a pyproject extra
# (make test-min installs every extra at its floor). NO_MKDOCS_2_WARNING silences
# Material's banner about its successor; it is not a build warning.
$(VENV)/.docs-installed: $(VENV)/.installed docs/requirements.txt
	$(PY) -m pip install --quiet -r docs/requirements.txt
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache .mypy_cache .ruff_cache site
