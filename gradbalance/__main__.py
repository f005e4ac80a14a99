"""``python -m gradbalance``: the command line (see :mod:`gradbalance.cli`)."""
import sys

from gradbalance.cli import main

sys.exit(main())
