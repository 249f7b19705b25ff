# glassnet — two commands on a fresh machine:
#   make run    set up .venv, train the tutorial network on the bundled Pima data, then serve it on :8501
#   make test   set up .venv (with the test extras and PyTorch for the reference checks) and run the suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= runs/tutorial

.PHONY: run test bench bench-quick bench-deploy setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[plot,serve]"
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	# PyTorch is the reference for the cross-checks; 2.13.0 (CPU) installs from local disk.
	$(BIN)/pip install -q "torch==2.13.0"
	touch $@

setup: $(VENV)/.run-deps
setup-test: $(VENV)/.test-deps

run: setup
	$(BIN)/glassnet tutorial --out $(OUT)
	$(BIN)/glassnet serve $(OUT)/models --port 8501

test: setup-test
	$(BIN)/python -m pytest -q

$(VENV)/.bench-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench,keras]"
	touch $@

# W1-W5 beside PyTorch, Keras/JAX and scikit-learn (benchmarks/results/RESULTS.md), load time, HTTP serving
bench: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/suite.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/serve_bench.py

bench-quick: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/suite.py --quick
	$(BIN)/python benchmarks/serve_bench.py --quick

# deployment footprint (installs PyTorch and TensorFlow CPU stacks into temporary venvs; ~5 min) and Lambda cold start
bench-deploy: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/bench_footprint.py
	$(BIN)/python benchmarks/bench_lambda_cold_start.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
