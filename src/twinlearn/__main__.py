"""``python -m twinlearn``: the ``twinlearn`` command."""

import sys

from twinlearn.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
