"""``python -m honed``: the ``honed`` command line."""

import sys

from honed.cli import main

sys.exit(main())
