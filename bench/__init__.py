"""txlake's throughput benchmark: ``python -m bench.run`` (see bench/README.md)."""
