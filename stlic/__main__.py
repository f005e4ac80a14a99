import sys

from stlic.cli import main

sys.exit(main())
