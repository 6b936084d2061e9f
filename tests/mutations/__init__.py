"""Mutation suite for the README's guarantees: break each mechanism on a copy, expect red.

`python -m tests.mutations` (see run.py); the mutations themselves are in catalog.py.
"""
