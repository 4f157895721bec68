"""``python -m fetcher`` runs the CLI."""

import sys

from fetcher.cli import main

sys.exit(main())
