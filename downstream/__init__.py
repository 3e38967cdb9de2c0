"""SUPERB-style downstream evaluation of frozen upstreams, with a robustness matrix.

See :mod:`downstream.base` for the task interface and :mod:`downstream.runner` for the run.
"""
