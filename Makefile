# The two commands a newcomer needs (as root, on a fresh machine):
#   make demo   set everything up, bring the local cluster up and show netshift working
#   make test   set everything up and run the whole test suite (what CI runs)
# IP_FAMILY=dual make demo (or make up): a dual-stack cluster, IPv4 and IPv6 pods and Services.
.PHONY: setup demo test lint up down

FAMILY_FLAG = $(if $(IP_FAMILY),--ip-family=$(IP_FAMILY))

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/netshift demo $(FAMILY_FLAG)

test: setup lint
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict
	.venv/bin/lint-imports

up: setup
	.venv/bin/netshift up $(FAMILY_FLAG)

down:
	.venv/bin/netshift down
