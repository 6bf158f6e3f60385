"""`python -m metalab ...` is the `metalab` command."""

import sys

from metalab.cli.main import main

sys.exit(main())
