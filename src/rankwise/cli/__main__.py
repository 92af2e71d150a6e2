"""`python -m rankwise.cli ...` (handy under `torchrun -m`)."""

import sys

from .main import main

sys.exit(main())
