# Two commands: `make demo` and `make test`. Everything installs into a project-local .venv.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1

DEMO_DEALS ?= 5000
DEMO_SEED ?= 7
DEMO_PORT ?= 3000
# Earlier moments the demo also scores (the generator's export ends on 2026-07-01), so the page's
# deal view has a win-probability history to draw and the list a trend; without next best actions.
DEMO_HISTORY ?= 2026-05-01T00:00:00Z 2026-06-01T00:00:00Z 2026-06-15T00:00:00Z

.PHONY: postgres chromium demo test test-fast test-slow test-notebooks lint install clean docs serve bench-truth-gap bench-truth-ceiling bench-minimum-data

$(BIN)/dealrisk: pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/dealrisk

install: $(BIN)/dealrisk

demo: install
	$(BIN)/dealrisk generate --deals $(DEMO_DEALS) --seed $(DEMO_SEED) --out data/demo/export --truth data/demo/truth.csv
	$(BIN)/dealrisk validate data/demo/export
	$(BIN)/dealrisk train --data data/demo/export --truth data/demo/truth.csv --report data/demo/report.json --promote
	for as_of in $(DEMO_HISTORY); do $(BIN)/dealrisk score --data data/demo/export --as-of $$as_of --no-actions || exit 1; done
	$(BIN)/dealrisk score --data data/demo/export
	$(BIN)/dealrisk rank --limit 10
	@echo "the score store data/scores.db holds every open deal: 'dealrisk rank' lists them (--owner, --stage, --close-in 2026-Q3, --changed, --csv FILE)"
	@# The service in the background until it answers, then the page's address as the last line; Ctrl-C stops it.
	@DEALRISK_PAGE_EXPORT=$(CURDIR)/data/demo/export $(BIN)/dealrisk serve --port $(DEMO_PORT) & serve=$$!; \
	trap 'kill -TERM $$serve 2>/dev/null; wait $$serve; exit 130' INT TERM; \
	until $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
	    http://127.0.0.1:$(DEMO_PORT)/readyz 2>/dev/null; do kill -0 $$serve 2>/dev/null || exit 1; sleep 1; done; \
	echo; echo "scoring service on http://127.0.0.1:$(DEMO_PORT) (README section 'Serving' shows a request)"; \
	echo "managers' page, filled with the scored demo deals: http://127.0.0.1:$(DEMO_PORT)/page/   (Ctrl-C stops the service)"; \
	wait $$serve

serve: install
	$(BIN)/dealrisk serve

# Everything: the fast tier, then the end-to-end tier (real `bentoml serve` over HTTP,
# schemathesis against it, the gate on a shuffled-label model); about 3 minutes on 2 cores.
test: install lint postgres chromium
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

# The layout's rules (docs/architecture.md): layers, independence, no cycles.
lint: install
	$(BIN)/lint-imports

test-fast: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install postgres chromium
	$(BIN)/python -m pytest -m slow -q

# The notebooks alone, executed top to bottom in a real kernel (also part of `make test`'s tiers).
test-notebooks: install
	$(BIN)/python -m pytest -q tests/notebooks

# PostgreSQL for the score store's tests: each session starts a throwaway server (initdb + pg_ctl,
# tests/portfolio/postgres.py). Installed with apt-get when initdb is neither on PATH nor in
# Debian's /usr/lib/postgresql/*/bin, so a clean CI machine runs those tests instead of failing them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL with apt-get for the score store tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

# Chromium for the managers' page browser test (tests/serving/test_browser_page.py drives /usr/bin/chromium
# through Playwright; 'playwright install' would download a browser, which CI machines may not reach).
# Installed with apt-get (as root, or with sudo) when /usr/bin/chromium is missing.
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing Chromium with apt-get for the page's browser test"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# The win and slip models' gap to the generator's truth on 5 exports of 20,000 deals, each seed
# with its 90% interval, and the calibration methods side by side (~5 min a seed on 2 cores).
bench-truth-gap: install
	$(BIN)/python bench/truth_gap.py --deals 20000 --seeds 41 42 43 44 45

# The gap split: what the export does not show (a model fitted to the truth itself) and what learning costs.
bench-truth-ceiling: install
	$(BIN)/python bench/truth_ceiling.py --deals 20000 --seeds 41 42 43 44 45

# Closed training deals needed before the model beats the stage table beyond luck (MinimumData.reliable_closed).
bench-minimum-data: install
	$(BIN)/python bench/minimum_data.py --deals 300 600 1200 1800 2500 --seeds 1 2 3 4 5 6 7 8

docs: install
	$(BIN)/python -m features.pointintime.definitions > docs/features.md

clean:
	rm -rf data/demo mlflow.db mlruns mlartifacts .pytest_cache
