"""`python -m shelfcast` runs the CLI."""

import sys

from shelfcast.cli import main

sys.exit(main())
