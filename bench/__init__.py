"""Benchmark harness: jobservice against plain APScheduler and Flask-APScheduler, side by side.

Run `python -m bench.run` (or `make bench`); see bench/README.md.
"""
