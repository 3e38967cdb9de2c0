"""Entry point for ``accelerate launch distill.py --config configs/<recipe>.yaml [--key value]``.

The same as ``robustdistill distill``; see ``robustdistill/cli.py``.
"""

import sys

from robustdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
