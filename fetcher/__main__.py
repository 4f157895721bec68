"""``python -m fetcher`` runs the CLI."""

import sys

from fetcher.cli.main import main

sys.exit(main())
