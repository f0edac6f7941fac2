"""``python -m muonlab ...``: see :mod:`muonlab.cli`."""

import sys

from muonlab.cli import main

sys.exit(main())
