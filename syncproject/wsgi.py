"""WSGI entry point (gunicorn syncproject.wsgi).

The web server does not run Django's system checks the way ``manage.py`` commands do, so the
few that make serving unsafe (e.g. no encryption keys on a shared database) are run here and
stop start-up with their message.

Once loaded, the process's objects (Django, the apps, the URLconf and views) are moved out of
the garbage collector's sight with ``gc.freeze()``, after one collection of what loading left
behind: they live as long as the process, and without this every full collection walks all of
them with the GIL held while every request of the process waits. Measured in the two workers
of ``bench/api.py`` (20 clients on two cores): full collections of 44 to 102 ms before, 3 to 13 ms
after. Collections now walk only what requests created.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncproject.settings")
application = get_wsgi_application()

from syncproject.startup import refuse_unsafe_start  # noqa: E402 - needs the app registry

refuse_unsafe_start()
get_resolver().url_patterns  # noqa: B018 - import the URLconf and views now, not at a first request
gc.collect()
gc.freeze()
