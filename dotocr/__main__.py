"""`python -m dotocr` is the `dotocr` command."""

import sys

from dotocr.cli import main

if __name__ == "__main__":
    sys.exit(main())
