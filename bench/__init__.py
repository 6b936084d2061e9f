"""Benchmarks: pgqueue against Procrastinate, PgQueuer and hand-written SKIP LOCKED loops.

Run `python -m bench` (or `make bench`); `python -m bench --help` lists the sizes.
Every run starts its own throwaway PostgreSQL and gives each contender a fresh database
for each figure, so no contender inherits another's bloat or warm cache.
"""
