"""``python -m tlfs.pipeline.cli``: the ``tlfs`` command."""

import sys

from tlfs.pipeline.cli.entry_point import main

sys.exit(main())
