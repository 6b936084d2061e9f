.PHONY: bench

# Queue benchmarks against the peers; `make bench ARGS=--quick` for a 2-minute run.
bench:
	.venv/bin/python -m bench $(ARGS)
