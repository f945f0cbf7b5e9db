"""``python -m xmr``: the xmr command line (same as the ``xmr`` console script)."""

import sys

from xmr.cli import main

if __name__ == "__main__":
    sys.exit(main())
