# The two commands of the README:
#   make demo   sets everything up (first time: ~15 min, then seconds) and runs the pipeline
#               end to end on generated sample data
#   make test   sets up if needed and runs the test suite
SHELL := /bin/bash
USERS ?= 20000

.PHONY: setup demo test lock clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/interest-decay run --conf conf/local.yaml --users $(USERS)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lock:
	bash scripts/lock.sh

clean:
	rm -rf lakehouse data spark-warehouse
