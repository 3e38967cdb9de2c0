"""Downstream tasks, one folder each (``downstream/tasks/<name>/``, exposing ``TASK``)."""
