"""``python -m visualsim.serve CATALOG [--host H] [--port P] [--api-key-env NAME]``."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
