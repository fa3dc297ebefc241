"""`python -m dotocr.server`, the same as `dotocr-serve`."""

import sys

from .main import main

sys.exit(main())
