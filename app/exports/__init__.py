"""Batch re-export from ksqlDB: a table → a new snapshot version; a stream → rewritten day partitions.

Entry points: ``txlake export`` (:mod:`app.exports.cli`) and ``/exports`` on the worker
(:mod:`app.exports.web`, running the CLI as a subprocess through :mod:`app.exports.jobs`).
"""
