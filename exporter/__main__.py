"""``python -m exporter``: the command line (exporter/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
