"""`python -m dotocr.tray`: the same as the `dotocr-tray` command."""

import sys

from dotocr.tray.app import main

sys.exit(main())
