# The two commands a new user needs (see README.md):
#   make demo   run the embedded default study (tiny model, bundled data, CPU)
#   make test   lint and run the whole test suite (what CI runs)
# and, while changing code, make test-fast: lint and every test not marked slow, distributed or browser
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup demo test test-fast

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/clinalign model default >/dev/null
	.venv/bin/clinalign study run configs/demo.yaml --out runs/demo

test: setup
	bash scripts/setup-browser.sh
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/python -m pytest -q -m "not slow and not distributed and not browser"
