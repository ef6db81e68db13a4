# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make demo   creates .venv, installs, runs the main job on the embedded default
#   make test   the same install, then the test suite
#   (make test-fast: the same without the tests marked slow, for a quick edit loop)
#   make stack  the platform as processes on this machine (PostgreSQL, S3, MLflow, Ray head and
#               workers); make stack-status, make stack-down
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# pytest-xdist workers for make test / test-fast (CI has 2 cores; each file stays on one worker,
# see tests/conftest.py)
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

.PHONY: install demo test test-deps apt-test test-fast lint clean ffmpeg postgresql chromium stack stack-status stack-down

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=python3)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

ffmpeg:
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "ffmpeg missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else \
	    echo "error: ffmpeg/ffprobe not found and cannot install them (need root and apt-get)." >&2; \
	    echo "       musdb/museval need ffmpeg: run 'sudo apt-get install ffmpeg' and retry." >&2; \
	    exit 1; \
	  fi; \
	fi

# PostgreSQL's server (MLflow's backend store in `make stack` and its tests): Debian's package
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "PostgreSQL missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "error: PostgreSQL's server not found and cannot install it (need root and apt-get)." >&2; \
	    echo "       make stack needs it: run 'sudo apt-get install postgresql' and retry." >&2; \
	    exit 1; \
	  fi; \
	fi

# Headless Chromium for the separation service's web page test (Debian's chromium and its
# driver: nothing is downloaded at test time). Without root the test is skipped, not failed.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "chromium missing: installing chromium and chromium-driver with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "warning: chromium/chromedriver not found; the web page test will be skipped" >&2; \
	    echo "         (sudo apt-get install chromium chromium-driver to run it)" >&2; \
	  fi; \
	fi

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[sweeps,serve,stack,dev]"
	@touch $(STAMP)

install: ffmpeg $(STAMP)

demo: install
	$(PY) -m sweeps demo $(DEMO_ARGS)

# make test: the pip install and Debian's packages side by side (apt-get one package at a time)
test-deps:
	@$(MAKE) --no-print-directory -j2 $(STAMP) apt-test

apt-test:
	@for target in ffmpeg postgresql chromium; do $(MAKE) --no-print-directory $$target || exit 1; done

test: test-deps
	$(PYTEST)

test-fast: install chromium
	$(PYTEST) -m "not slow"

data/synth-demo/train: | $(STAMP)
	$(VENV)/bin/sep synth --out data/synth-demo --tracks 10 --seconds 16 --seed 0

stack: install postgresql data/synth-demo/train
	$(PY) -m services stack up

stack-status: $(STAMP)
	$(PY) -m services stack status

stack-down: $(STAMP)
	$(PY) -m services stack down

lint: install
	$(VENV)/bin/ruff check sepcore sweeps services tests

clean:
	rm -rf $(VENV) .cache data/synth-demo runs mlruns.db mlartifacts
