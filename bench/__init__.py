"""stddaq benchmarks: `make bench` runs every bench_*.py module here (see bench/run.py)."""
