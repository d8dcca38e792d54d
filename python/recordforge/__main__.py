"""``python -m recordforge`` is the ``recordforge`` command."""

import sys

from recordforge.cli.__main__ import main

sys.exit(main())
