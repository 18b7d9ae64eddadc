# The two commands a newcomer needs (as root, on a fresh machine):
#   make demo   set everything up, bring the local cluster up and show netshift working
#   make test   set everything up and run the whole test suite (what CI runs)
.PHONY: setup demo test lint up down

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/netshift demo

test: setup lint
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict
	.venv/bin/lint-imports

up: setup
	.venv/bin/netshift up

down:
	.venv/bin/netshift down
