"""WSGI entry point (gunicorn syncproject.wsgi).

The web server does not run Django's system checks the way ``manage.py`` commands do, so the
few that make serving unsafe (e.g. no encryption keys on a shared database) are run here and
stop start-up with their message.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncproject.settings")
application = get_wsgi_application()

from syncproject.startup import refuse_unsafe_start  # noqa: E402 - needs the app registry

refuse_unsafe_start()
