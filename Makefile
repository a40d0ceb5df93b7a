# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all lint bench clean

$(BIN)/optiforge: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build of 2.13.0; nothing may pull another one
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --constraint constraints.txt -e '.[all,dev]'
	touch $@

demo: $(BIN)/optiforge
	$(BIN)/optiforge run

# One process per test folder: engines (inductor, OpenVINO, ONNX Runtime, torch.ao) keep process-wide state,
# and in one process for the whole suite a few tests were seen to fail, and once to crash, only after
# hundreds of others had run; each folder passes on its own.
SUITES = $(sort $(filter-out tests/helpers/,$(wildcard tests/*/))) $(wildcard tests/test_*.py)

test: $(BIN)/optiforge
	@set -e; for suite in $(SUITES); do echo "== $$suite"; $(BIN)/python -m pytest $$suite; done

test-all: $(BIN)/optiforge
	$(BIN)/python -m pytest -m ''

lint: $(BIN)/optiforge
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
