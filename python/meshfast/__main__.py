"""``python -m meshfast``: the same as the ``meshfast`` command."""

from __future__ import annotations

import sys

from meshfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
