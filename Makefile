# The two commands of the README:
#   make demo   sets everything up (first time: ~15 min, then seconds) and runs the pipeline
#               end to end on generated sample data
#   make test   sets up if needed, checks lint and format, and runs the test suite
SHELL := /bin/bash
USERS ?= 20000

.PHONY: setup demo identifiable cdnow lint test lock clean

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
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lock:
	bash scripts/lock.sh

clean:
	rm -rf lakehouse lakehouse-cdnow lakehouse-identifiable data spark-warehouse
