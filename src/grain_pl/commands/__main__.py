"""`python -m grain_pl.commands ...` is `grain ...`."""

import sys

from grain_pl.commands import main

sys.exit(main())
