"""``python -m emoserve``: the command line."""

import sys

from emoserve.cli import main

sys.exit(main())
