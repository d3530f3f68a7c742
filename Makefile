# Usual targets; each is one line a newcomer can also run by hand.
.PHONY: install lint format typecheck test bench demo ci

install:
	bash scripts/install.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck:
	.venv/bin/mypy bot commands adapters sandbox

test:
	bash scripts/test.sh

bench:
	.venv/bin/python -m benchmarks

demo:
	bash scripts/demo.sh

ci:
	bash .ci/run
