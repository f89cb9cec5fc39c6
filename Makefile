# livt: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create (or reuse) a virtual environment in $(VENV) and install the package into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Exact versions for the reproducible install; pyproject.toml only declares lower bounds.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist
RUNS ?= runs

.PHONY: install data browser demo test lint pytest serve-artifact serve-check docker-check lock study bench bench-docker page-figures clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_PIN)
	$(PIP) install -e '.[export,serve,dev]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no internet needed).
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$LIVT_DATA_ROOT" ]; then \
		echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or set LIVT_DATA_ROOT to a folder with the four IDX files" >&2; exit 2; \
	fi

demo: install data
	$(PY) scripts/demo.py --runs $(RUNS)

lint: install
	$(VENV)/bin/ruff check livt tests benchmarks scripts
	$(VENV)/bin/ruff format --check livt tests benchmarks scripts

# Chromium drives the page's test (tests/serving/test_page_browser.py): Debian's, installed when missing
# and root (as docker-check installs Docker); otherwise that test is skipped, and pytest's closing
# summary lists every skipped test with the command that runs it.
browser:
	@if [ -n "$$LIVT_CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then \
		echo "Chromium: found"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	else \
		echo "Chromium missing: the page's browser test will be skipped (sudo apt-get install chromium)" >&2; \
	fi

pytest: install browser
	$(VENV)/bin/pytest -q

# An artifact made the way users make one (a tiny synthetic run, then livt-export), made once per
# `make` run for serve-check and docker-check both.
SERVE_CHECK := build/serve-check
ARTIFACT := $(SERVE_CHECK)/model.onnx
serve-artifact: install
	rm -rf $(SERVE_CHECK)
	$(VENV)/bin/livt-train finetune --recipe synthetic-tiny --from-scratch --epochs 2 --quiet --out $(SERVE_CHECK)/run
	$(VENV)/bin/livt-export --run $(SERVE_CHECK)/run --out $(ARTIFACT)

# The serving image's install and entry command in a fresh virtualenv without torch (no Docker needed).
serve-check: serve-artifact
	bash docker/ci-serve-check.sh $(ARTIFACT)

# The CPU image built offline from nothing (Debian base + wheelhouse), run and checked: installs
# Docker and starts a daemon when needed (as root), see docker/docker-check.sh.
docker-check: serve-artifact
	PYTHON=$(abspath $(PY)) bash docker/docker-check.sh $(ARTIFACT)

test: lint serve-check docker-check pytest

# Regenerate docker/requirements-*.lock after changing the serve extra or build-system.requires.
lock: install
	$(PY) scripts/lock_serve.py

# The paper's claims, 3 seeds a cell, IF 100 and 1000 -> docs/study.md (hours on 2 cores; finished runs,
# also those archived in docs/study/runs, are reused). On a GPU machine: JOBS=8 ARGS="--device cuda".
JOBS ?= 1
study: install data
	$(PY) benchmarks/study.py --runs $(RUNS)/study --jobs $(JOBS) $(ARGS)

# docs/figures/page-*.png: the service's page in headless Chromium on the demo's model (`make demo` first).
page-figures: install
	$(PY) scripts/page_screenshots.py --model $(RUNS)/fmnist/export/model.onnx --out docs/figures

# Every row of docs/performance.md's table, side by side, and its figures (run `make demo` first;
# MAE_REPO: a copy of github.com/facebookresearch/mae for the MGP row, else that row is skipped).
MAE_REPO ?=
bench: install
	$(PY) benchmarks/bench_summary.py --run $(RUNS)/fmnist/finetune --model $(RUNS)/fmnist/export/model.onnx \
		--json $(RUNS)/bench/summary.json --figures docs/figures $(if $(MAE_REPO),--mae-repo $(MAE_REPO))

# The image (make docker-check builds it) against the same server on this host, interleaved.
bench-docker: install
	$(PY) benchmarks/bench_docker.py --image livt-serve:check --model $(RUNS)/fmnist/export/model.onnx

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
