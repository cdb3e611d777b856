"""``python -m inspector`` runs the CLI (also under torchrun)."""

import sys

from ._cli import main

sys.exit(main())
