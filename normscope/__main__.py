"""`python -m normscope` runs the command line."""

from __future__ import annotations

from normscope.cli import main

if __name__ == "__main__":
    main()
