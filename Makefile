# The two commands of the README:
#   make demo   sets everything up (first time: ~15 min, then seconds) and runs the pipeline
#               end to end on generated sample data
#   make test   sets up if needed, checks lint and format, and runs the test suite (under 10 min)
# and the end-to-end tier, which CI runs after it: make test-slow
SHELL := /bin/bash
USERS ?= 20000

.PHONY: setup demo identifiable cdnow lint test test-slow lock clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/interest-decay run --conf conf/local.yaml --users $(USERS)

# A generated shop whose per-user decay is identifiable (conf/identifiable.yaml): the evaluation
# compares every user's predicted interest half-life with the generator's truth.
identifiable: setup
	.venv/bin/interest-decay run --conf conf/identifiable.yaml

# The real CDNOW log from the installed lifetimes wheel (never copied into the repository), with
# the classic 39 + 39 week split: ingest -> sessionize -> features -> train -> score -> evaluate.
CDNOW = $(shell .venv/bin/python -c 'import lifetimes.datasets as d, pathlib; print(pathlib.Path(d.__file__).parent / "CDNOW_master.txt")' 2>/dev/null)
cdnow: setup
	.venv/bin/interest-decay run --conf conf/cdnow.yaml --from ingest --input "$(CDNOW)" --preset cdnow

# Lint and format check (ruff, configured in pyproject.toml); `make test` runs it first.
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	.venv/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The end-to-end and fault tier (tests marked slow): training and scoring through spark-submit on
# a standalone cluster with the lakehouse on S3, a whole pseudonymised run grepped for raw ids,
# crashes, kills, concurrent writers and resumes, smoke runs of the benchmarks.
test-slow: setup
	.venv/bin/python -m pytest -m slow $(PYTEST_ARGS)

lock:
	bash scripts/lock.sh

clean:
	rm -rf lakehouse lakehouse-cdnow lakehouse-identifiable data spark-warehouse
