#!/usr/bin/env python
"""Django's command-line utility for administrative tasks (``python -m syncproject`` is the
same for an installed package)."""

from syncproject.__main__ import main

if __name__ == "__main__":
    main()
