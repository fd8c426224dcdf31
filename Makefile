# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test lint setup

setup:
	scripts/setup

demo: setup
	.venv/bin/plantbridge demo

test:
	scripts/test

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
