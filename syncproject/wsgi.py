"""WSGI entry point (gunicorn syncproject.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncproject.settings")
application = get_wsgi_application()
