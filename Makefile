# The course in two commands:  `make lab` opens it, `make test` runs the whole test suite.
# Both create the virtual environment (.venv) and install the project on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Set TORCH to pin the torch build installed first (CI: TORCH=torch==2.13.0, the local CPU wheel).
TORCH ?=
LAB_ARGS ?=
# `make test` runs pytest in this many processes (pytest-xdist), one test file per process at a time.
TEST_JOBS ?= 2
# JupyterLab refuses to start as root (containers, CI) unless told it is fine.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test setup data notebooks autograder bench info clean mutants

# jupyter-config/ (put first on JUPYTER_CONFIG_PATH) disables JupyterLab's announcements plugin:
# no "Would you like to get notified about official Jupyter news?" pop-up, no update checks.
LAB_CONFIG := JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}"

lab: setup data
	$(LAB_CONFIG) $(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

test: setup
	$(BIN)/python -m pytest --nbval-lax -m "not slow" -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH)"; fi
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

data: setup
	$(BIN)/python -m metalib download omniglot

notebooks: setup
	$(BIN)/python -m metalib assign

autograder: setup
	$(BIN)/python -m metalib.grading.gradescope build --out autograder

# The fast benchmarks; each writes its tables into docs/results/, then docs/RESULTS.md is rebuilt from them.
# (demo_mode.py exits 1 when a notebook misses its 30 s target: its table says which; the `-` goes on.)
bench: setup data
	$(BIN)/python benchmarks/sampler_speed.py --out docs/results/sampler_speed.md
	$(BIN)/python benchmarks/baselines.py --out docs/results/baselines.md
	$(BIN)/python benchmarks/blackbox.py --out docs/results/blackbox.md
	$(BIN)/python benchmarks/maml_gradient.py --out docs/results/maml_gradient.md
	$(BIN)/python benchmarks/rl2_bandits.py --out docs/results/rl2_bandits.md
	$(BIN)/python benchmarks/rl2_gridnavi.py --out docs/results/rl2_gridnavi.md
	-$(BIN)/python benchmarks/demo_mode.py --out docs/results/demo_mode.md
	$(BIN)/python benchmarks/results_doc.py

# Mutation testing of the core modules (tools/mutants.py): `make mutants MODULES="checks.py maml.py"`
# runs only those. One worker, lowest priority: it takes hours for all modules on 2 cores.
MODULES ?=
mutants: setup
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[test,mutation]"
	OMP_NUM_THREADS=1 nice -n 19 $(BIN)/python tools/mutants.py $(MODULES)

info: setup
	$(BIN)/python -m metalib info

clean:
	rm -rf .cache autograder .pytest_cache
