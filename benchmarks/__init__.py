"""Benchmarks of docs/performance.md and docs/benchmarks.md, one module per table.

Run from the repository root as modules, e.g. ``python -m benchmarks.bench_data``, so that
``benchmarks._common`` and the checkout's ``robustdistill`` import without touching
``sys.path`` (under ``python -P``, which leaves the working directory off it, add
``PYTHONPATH=.``).
"""
