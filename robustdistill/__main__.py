"""``python -m robustdistill ...``: the same as the ``robustdistill`` command
(:func:`robustdistill.cli.main`; its exit status is the process's)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
