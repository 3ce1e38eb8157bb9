"""Measurements of the project (each module a command writing JSON to benchmarks/results/), the
curve tables they replay, and reliability diagnostics."""
