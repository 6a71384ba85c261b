"""``python -m syncproject <command>`` (or the ``syncproject`` script): ``manage.py`` for an
installed package, where there is no checkout to hold ``manage.py``."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
