# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test lint setup bench

setup:
	scripts/setup

demo: setup
	.venv/bin/plantbridge demo

test:
	scripts/test

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

# Every benchmark, one table with same-run ceilings (about 10 minutes; see benchmarks/__main__.py).
bench: setup
	.venv/bin/python -m benchmarks
