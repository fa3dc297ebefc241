"""`python -m dotocr.server`, the same as `dotocr-serve`."""

import sys

from .app import main

sys.exit(main())
