"""`python -m r3mes_desktop.cli` = `r3mes-miner` (also the frozen bundle's entry)."""

import sys

from r3mes_desktop.cli import main

sys.exit(main())
