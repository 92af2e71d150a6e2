"""`python -m rankwise ...`: the same command as `rankwise ...`."""

import sys

from .cli.main import main

sys.exit(main())
