"""``python -m payguard_sign``: the command line of :mod:`payguard_sign.cli`."""

import sys

from .cli import main

sys.exit(main())
