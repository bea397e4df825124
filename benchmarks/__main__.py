"""`python -m benchmarks` (what `make bench` runs): see benchmarks/cli.py."""

import sys

from benchmarks.cli import main

sys.exit(main())
