"""Django settings, read from the environment (see ``syncproject/env.py``).

Defaults give the embedded set-up: SQLite under ``var/`` and the django-q2 ORM broker, so
``make run`` works on a fresh machine. ``DATABASE_URL`` switches to PostgreSQL for production;
any number of hosts can then run ``manage.py qcluster`` against the same database.
"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url

from syncproject.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# a checkout keeps its state in <checkout>/var; an installed package in ./var of where it runs
_CHECKOUT = (BASE_DIR / "manage.py").exists()
VAR_DIR = Path(
    env_str(
        "SYNC_VAR_DIR",
        str((BASE_DIR if _CHECKOUT else Path.cwd()) / "var"),
        "Directory for local state: the SQLite database, development keys, stored attachments.",
        doc_default="<checkout>/var (an installed package: ./var)",
    )
)


def _dev_secret_file(name: str, make: Callable[[], str]) -> str:
    """Read a development-only secret from ``var/``, creating it on first run."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False, "Django debug mode. Never true in production.")
_secret_key = env_secret("DJANGO_SECRET_KEY", "Django's secret key for sessions and signing")
SYNC_USING_DEV_SECRET_KEY = _secret_key is None
SECRET_KEY = _secret_key or _dev_secret_file("dev-secret-key", lambda: secrets.token_urlsafe(50))
ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"], "Host names this site serves."
)
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", [], "Origins trusted for CSRF, e.g. https://sync.example.com."
)
SITE_URL = env_str(
    "SITE_URL", "http://127.0.0.1:8000", "Public base URL, used in links sent by email."
)
BEHIND_TLS_PROXY = env_bool(
    "DJANGO_BEHIND_TLS_PROXY",
    False,
    "Served through a TLS-terminating proxy that sets X-Forwarded-Proto: trust it; the HTTPS "
    "settings below then default to on.",
)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool(
    "DJANGO_SSL_REDIRECT",
    BEHIND_TLS_PROXY,
    "Redirect plain-HTTP requests to HTTPS (except /healthz and /metrics, which load "
    "balancers and scrapers may call over HTTP).",
    doc_default="$DJANGO_BEHIND_TLS_PROXY",
)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool(
    "DJANGO_SECURE_COOKIES",
    BEHIND_TLS_PROXY,
    "Send the session and CSRF cookies over HTTPS only.",
    doc_default="$DJANGO_BEHIND_TLS_PROXY",
)
SECURE_HSTS_SECONDS = env_int(
    "DJANGO_HSTS_SECONDS",
    31_536_000 if BEHIND_TLS_PROXY else 0,
    "Strict-Transport-Security max-age: browsers use only HTTPS for this long (0: no header). "
    "Start small (e.g. 3600) when first enabling HTTPS.",
    minimum=0,
    doc_default="31536000 behind a TLS proxy, else 0",
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool(
    "DJANGO_HSTS_INCLUDE_SUBDOMAINS",
    BEHIND_TLS_PROXY,
    "HSTS also covers every subdomain of this site's domain.",
    doc_default="$DJANGO_BEHIND_TLS_PROXY",
)
SECURE_HSTS_PRELOAD = env_bool(
    "DJANGO_HSTS_PRELOAD",
    BEHIND_TLS_PROXY,
    "Mark the HSTS header as preloadable (the domain is only preloaded once submitted to "
    "hstspreload.org).",
    doc_default="$DJANGO_BEHIND_TLS_PROXY",
)
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "syncproject.apps.SyncAdminConfig",  # Django's admin with the sync control room added
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    # before django_q: its qcluster command replaces django-q2's (syncqueue/cluster.py)
    "syncqueue",
    "django_q",
    "axes",  # login throttling and lockout on every login page
    "django_ratelimit",
    "workspace",
    "integrations",
    # one app per provider (its models, admin and glue); its connector is in the registry
    "integrations.imap",
    "integrations.msgraph",
    "integrations.zendesk",
    "integrations.zimbra",
    "mail",
    "portal",
    "sandbox",  # local protocol servers and the demo (manage.py demo); unused in production
    "syncproject",  # the project's own commands (env_docs)
]

MIDDLEWARE = [
    "syncproject.middleware.ServerTimingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int(
    "SYNC_LOGIN_FAILURE_LIMIT",
    5,
    "Failed sign-ins (per user name and address) before that pair is locked out.",
    minimum=1,
)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_int(
        "SYNC_LOGIN_LOCKOUT_MINUTES",
        15,
        "Minutes a locked-out user name and address must wait before trying again.",
        minimum=1,
    )
)
# Lock the pair, not the whole address (one office behind one NAT) nor the whole account
# (anyone could lock anyone out by guessing wrong on purpose).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "syncproject.lockout.locked_out"
AXES_IPWARE_PROXY_COUNT = 1 if BEHIND_TLS_PROXY else None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if BEHIND_TLS_PROXY else ("REMOTE_ADDR",)
)
AXES_VERBOSE = False

ROOT_URLCONF = "syncproject.urls"
WSGI_APPLICATION = "syncproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # the project's own pages and admin overrides; each app keeps its templates
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
# CONN_MAX_AGE matters: django-q2's ORM broker calls close_old_connections() on every enqueue and
# dequeue, so with Django's default of 0 every enqueue opens a new connection (16x slower on
# PostgreSQL). Health checks make a persistent connection safe after a database restart.
CONN_MAX_AGE = env_int(
    "DB_CONN_MAX_AGE", 60, "Seconds a database connection is reused (>= 60).", minimum=0
)
DATABASE_URL = env_str(
    "DATABASE_URL", "", "PostgreSQL URL (postgres://user:pass@host:5432/db); empty = SQLite."
)
SQLITE_PATH = env_str(
    "SQLITE_PATH",
    str(VAR_DIR / "db.sqlite3"),
    "SQLite file when no URL.",
    doc_default="$SYNC_VAR_DIR/db.sqlite3",
)
SQLITE_BUSY_TIMEOUT = env_int(
    "SQLITE_BUSY_TIMEOUT", 20, "Seconds SQLite waits for a lock before failing.", minimum=1
)
SQLITE_CACHE_MB = env_int(
    "SQLITE_CACHE_MB", 2, "SQLite page cache per connection, in MB.", minimum=1
)
SQLITE_BATCH_CACHE_MB = env_int(
    "SQLITE_BATCH_CACHE_MB",
    32,
    "SQLite page cache while a worker writes one batch of a sync, in MB (then back to "
    "SQLITE_CACHE_MB; not used when that is larger): a batch that fits is written to the log "
    "once, not spilled.",
    minimum=1,
)
DB_PREPARED_STATEMENTS = env_bool(
    "DB_PREPARED_STATEMENTS",
    True,
    "PostgreSQL: the engine's hottest statements run as prepared statements, planned once per "
    "connection. Turn off behind PgBouncer in transaction mode older than 1.21 (or without "
    "max_prepared_statements).",
)
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=CONN_MAX_AGE, conn_health_checks=True
        )
    }
    if DB_PREPARED_STATEMENTS:
        # psycopg may prepare; only the statements that ask for it are (syncqueue.engine.rows:
        # Django's own cursors bind on the client and never prepare)
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
else:
    Path(SQLITE_PATH).parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            # Django's SQLite backend, with writers queued on a file lock (syncproject/sqlite).
            "ENGINE": "syncproject.sqlite",
            "NAME": SQLITE_PATH,
            "CONN_MAX_AGE": CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
            # IMMEDIATE takes the write lock when a transaction starts, so SQLite waits out the
            # busy timeout instead of failing with "database is locked" on a read->write upgrade.
            "OPTIONS": {
                "timeout": SQLITE_BUSY_TIMEOUT,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                f"PRAGMA cache_size=-{SQLITE_CACHE_MB * 1024};",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The default cache is a table in the database, shared by every web process and host (rate
# limits count there); its increment is atomic (syncproject/cache.py). CACHE_URL switches to
# Redis, e.g. redis://127.0.0.1:6379/1.
CACHE_URL = env_str("CACHE_URL", "", "Redis URL for the shared cache; empty = the database.")
if CACHE_URL:
    CACHES: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    }
    RATELIMIT_USE_CACHE = "default"
else:
    CACHES = {
        "default": {
            "BACKEND": "syncproject.cache.AtomicDatabaseCache",
            "LOCATION": "sync_cache",
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }
# django-ratelimit knows only memcached and Redis as shared caches with atomic increments; the
# database cache above is both (see syncproject/cache.py), so its checks are told so.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
SYNC_RATE_LIMITS = {
    "sync_now": env_str(
        "SYNC_RATE_SYNC_NOW", "20/m", "'Sync now' requests per person (django-ratelimit rate)."
    ),
    "connection_test": env_str(
        "SYNC_RATE_CONNECTION_TEST",
        "10/10m",
        "Connection tests per person; a person also runs only one test at a time.",
    ),
    "task_create": env_str("SYNC_RATE_TASK_CREATE", "60/m", "Tasks a person may create."),
    "address_confirmation": env_str(
        "SYNC_RATE_ADDRESS_CONFIRMATION", "5/h", "Address confirmation mails a person may ask for."
    ),
    "password_reset": env_str(
        "SYNC_RATE_PASSWORD_RESET", "3/h", "Password reset mails per address (asked by anyone)."
    ),
}
SYNC_CONNECTION_TEST_TIMEOUT = env_float(
    "SYNC_CONNECTION_TEST_TIMEOUT",
    5.0,
    "Seconds a connection test waits to connect (it runs inside a web request).",
    minimum=0.5,
)
SYNC_ALLOWED_PRIVATE_NETWORKS = env_list(
    "SYNC_ALLOWED_PRIVATE_NETWORKS",
    [],
    "Private address ranges (CIDR, comma-separated) that servers entered by ordinary users may "
    "point to, e.g. 10.1.2.0/24 for an internal mail server. Empty: public addresses only.",
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
CSRF_FAILURE_VIEW = "portal.api.csrf_failure"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC", "Default time zone for schedules and display.")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing directory
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step
MEDIA_ROOT = Path(
    env_str(
        "MEDIA_ROOT",
        str(VAR_DIR / "media"),
        "Where attachments are stored.",
        doc_default="$SYNC_VAR_DIR/media",
    )
)
MEDIA_URL = "media/"

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend",
    "Django email backend used for notifications.",
)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "sync@localhost", "Sender of notifications.")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost", "SMTP server (with the SMTP email backend).")
EMAIL_PORT = env_int("EMAIL_PORT", 25, "SMTP port (587 with STARTTLS, 465 with TLS).", minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "", "SMTP user name; empty: no authentication.")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "SMTP password") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False, "SMTP with STARTTLS (usually port 587).")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False, "SMTP over TLS from the start (port 465).")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, "Seconds before an SMTP attempt gives up.", minimum=1)
SYNC_NOTIFY_MIN_INTERVAL = env_int(
    "SYNC_NOTIFY_MIN_INTERVAL",
    900,
    "Seconds between two notification emails about the same alert or connection; a change "
    "within that time is mailed once it has passed, if it still holds.",
    minimum=0,
)

# --- Sync engine ------------------------------------------------------------------------------
SYNC_QUEUE_NAME = env_str(
    "SYNC_QUEUE_NAME", "syncproject", "django-q2 cluster name; every host must use the same one."
)
SYNC_WORKERS = env_int("SYNC_WORKERS", 2, "Worker processes per qcluster.", minimum=1)
SYNC_TASK_TIMEOUT = env_int(
    "SYNC_TASK_TIMEOUT", 300, "Seconds before django-q2 kills a task (one job slice).", minimum=5
)
SYNC_TASK_RETRY = env_int(
    "SYNC_TASK_RETRY",
    SYNC_TASK_TIMEOUT + 120,
    "Seconds before django-q2 redelivers an unacknowledged task; must exceed the timeout.",
    minimum=6,
    doc_default="SYNC_TASK_TIMEOUT + 120",
)
SYNC_SLICE_SECONDS = env_float(
    "SYNC_SLICE_SECONDS",
    round(SYNC_TASK_TIMEOUT * 0.4, 1),
    "Time budget of one job slice; the job then re-queues itself and continues.",
    minimum=0.0,
    doc_default="0.4 * SYNC_TASK_TIMEOUT",
)
SYNC_LEASE_SECONDS = env_int(
    "SYNC_LEASE_SECONDS",
    30,
    "A running job whose lease has not been renewed for this long is rescued (its worker died).",
    minimum=3,
)
SYNC_LEASE_RENEW_SECONDS = env_float(
    "SYNC_LEASE_RENEW_SECONDS",
    SYNC_LEASE_SECONDS / 4,
    "A running job's worker renews its lease this often (a thread, whatever the batch does).",
    minimum=0.5,
    doc_default="SYNC_LEASE_SECONDS / 4",
)
SYNC_RESCUE_INTERVAL = env_float(
    "SYNC_RESCUE_INTERVAL",
    10.0,
    "Each cluster's dispatcher looks for expired leases this often.",
    minimum=0.5,
)
SYNC_DISPATCH_INTERVAL = env_float(
    "SYNC_DISPATCH_INTERVAL",
    60.0,
    "A full dispatcher pass (schedules, retries, tickets, pruning) runs this often.",
    minimum=1.0,
)
SYNC_STALL_SECONDS = env_float(
    "SYNC_STALL_SECONDS",
    30.0,
    "A cluster with tickets waiting, a worker free and nothing started for this long replaces "
    "its queue, pusher and workers.",
    minimum=1.0,
)
SYNC_CLUSTER_MAX_HEALS = env_int(
    "SYNC_CLUSTER_MAX_HEALS",
    3,
    "Queue replacements within 10 minutes before a cluster exits (status 3) to be restarted.",
    minimum=0,
)
SYNC_CLUSTER_BEAT_SECONDS = env_float(
    "SYNC_CLUSTER_BEAT_SECONDS",
    10.0,
    "A healthy cluster writes its heartbeat and pings the watchdog this often.",
    minimum=0.5,
)
SYNC_WATCHDOG_SECONDS = env_float(
    "SYNC_WATCHDOG_SECONDS",
    45.0,
    "make run restarts a qcluster that has not proved it works for this long "
    "(systemd: WatchdogSec).",
    minimum=5.0,
)
SYNC_MAX_ATTEMPTS = env_int(
    "SYNC_MAX_ATTEMPTS", 5, "Failed attempts before a job is marked failed.", minimum=1
)
SYNC_RETRY_BASE_SECONDS = env_float(
    "SYNC_RETRY_BASE_SECONDS", 30.0, "First retry delay; doubles per attempt.", minimum=0.0
)
SYNC_RETRY_MAX_SECONDS = env_float(
    "SYNC_RETRY_MAX_SECONDS", 3600.0, "Longest retry delay.", minimum=0.0
)
SYNC_INLINE_WAIT_MAX = env_float(
    "SYNC_INLINE_WAIT_MAX",
    5.0,
    "A Retry-After up to this many seconds is waited out inside the running slice.",
    minimum=0.0,
)
SYNC_FAILING_AFTER = env_int(
    "SYNC_FAILING_AFTER", 3, "Consecutive failed jobs before a connection is 'failing'.", minimum=1
)
SYNC_DISABLE_AFTER = env_int(
    "SYNC_DISABLE_AFTER", 10, "Consecutive failed jobs before a connection is disabled.", minimum=1
)
SYNC_HEARTBEAT_STALE_SECONDS = env_int(
    "SYNC_HEARTBEAT_STALE_SECONDS",
    90,
    "Workers count as down when no cluster or worker proved it works for this long.",
    minimum=10,
)
SYNC_IDLE_RENEW_SECONDS = env_int(
    "SYNC_IDLE_RENEW_SECONDS",
    1200,
    "The IMAP listener ends and restarts IDLE this often (RFC 2177: at most 29 minutes).",
    minimum=30,
)
SYNC_LISTEN_RECONCILE_SECONDS = env_float(
    "SYNC_LISTEN_RECONCILE_SECONDS",
    10.0,
    "How often the listener looks for mailboxes to start or stop watching, and beats.",
)
SYNC_LISTEN_MAX_BACKOFF = env_float(
    "SYNC_LISTEN_MAX_BACKOFF",
    300.0,
    "Longest wait (seconds, with jitter) before the listener reconnects a dropped mailbox.",
)
SYNC_PUSHED_POLL_FACTOR = env_float(
    "SYNC_PUSHED_POLL_FACTOR",
    1.0,
    "Interval schedules of connections push is watching (an IMAP mailbox sync_listen has in "
    "IDLE, a Graph mailbox with a live subscription) run this many times less often: the poll "
    "becomes the slower safety net. Others, and any whose push stops, are polled as scheduled. "
    "1 = as scheduled; e.g. 4 once sync_listen runs.",
)
SYNC_PUBLIC_URL = env_str(
    "SYNC_PUBLIC_URL",
    "",
    "Public https:// base URL at which Microsoft Graph reaches this site for change "
    "notifications (e.g. https://sync.example.com); empty = Graph mail is polled only.",
)
SYNC_GRAPH_SUBSCRIPTION_MINUTES = env_int(
    "SYNC_GRAPH_SUBSCRIPTION_MINUTES",
    4230,
    "Lifetime asked for a Graph mail subscription (Graph allows under 3 days in older and "
    "7 days in newer documentation).",
    minimum=45,
)
SYNC_GRAPH_RENEW_BEFORE_MINUTES = env_int(
    "SYNC_GRAPH_RENEW_BEFORE_MINUTES",
    1440,
    "The dispatcher renews a Graph subscription when it expires within this many minutes.",
    minimum=10,
)
SYNC_DISPATCH_LIMIT = env_int(
    "SYNC_DISPATCH_LIMIT", 20000, "Most connections enqueued by one dispatcher pass.", minimum=1
)
SYNC_SCHEDULE_JITTER = env_float(
    "SYNC_SCHEDULE_JITTER",
    0.1,
    "Interval schedules are spread by up to this fraction of the interval (max 5 min).",
    minimum=0.0,
)
SYNC_KEEP_JOBS = env_int(
    "SYNC_KEEP_JOBS", 50, "Finished jobs always kept per connection.", minimum=1
)
SYNC_KEEP_SUCCEEDED_DAYS = env_int(
    "SYNC_KEEP_SUCCEEDED_DAYS",
    7,
    "Older succeeded/cancelled jobs beyond the kept ones go.",
    minimum=1,
)
SYNC_KEEP_FAILED_DAYS = env_int(
    "SYNC_KEEP_FAILED_DAYS", 30, "Older failed jobs beyond the kept ones go.", minimum=1
)
SYNC_LIVE_FIGURE_MS = env_int(
    "SYNC_LIVE_FIGURE_MS",
    10,
    "A figure over history or every connection (the dashboard's, the day's outcomes behind "
    "/healthz) is counted on each request while counting it costs less than this many ms; once "
    "it costs more twice running it is served from the dispatcher's last pass.",
    minimum=1,
)
SYNC_ALERT_BACKLOG = env_int(
    "SYNC_ALERT_BACKLOG", 100, "Dashboard alert when more jobs than this are waiting.", minimum=1
)
SYNC_ALERT_FAILURES_24H = env_int(
    "SYNC_ALERT_FAILURES_24H", 50, "Dashboard alert when more jobs failed in 24 h.", minimum=1
)
SYNC_ALERT_NO_SUCCESS_MINUTES = env_int(
    "SYNC_ALERT_NO_SUCCESS_MINUTES",
    60,
    "Dashboard alert when no job succeeded for this long while connections are enabled.",
    minimum=5,
)
SYNC_ALERT_GRACE_SECONDS = env_int(
    "SYNC_ALERT_GRACE_SECONDS",
    120,
    "An alert is mailed only once it has been on this long (no false alarms while starting).",
    minimum=0,
)
SYNC_ENCRYPTION_KEYS = [
    key
    for key in re.split(
        r"[,\s]+",
        env_secret(
            "SYNC_ENCRYPTION_KEYS",
            "Fernet keys for stored credentials, newest first, comma-separated: the first "
            "encrypts, all decrypt. Unset: a development key is created in var/",
        )
        or "",
    )
    if key
]
SYNC_DEV_ENCRYPTION_KEY_FILE = VAR_DIR / "dev-encryption.key"
SYNC_EXTRA_CONNECTORS = dict(
    item.split("=", 1)
    for item in env_list(
        "SYNC_EXTRA_CONNECTORS",
        [],
        "Extra connector kinds as kind=dotted.path.Class, comma-separated (tests, plug-ins).",
    )
)

# --- manage.py serve (the embedded set-up) ------------------------------------------------------
SERVE_HOST = env_str("HOST", "127.0.0.1", "Address 'manage.py serve' (make run) listens on.")
SERVE_PORT = env_int("PORT", 8000, "Port 'manage.py serve' (make run) listens on.", minimum=1)
SERVE_ADMIN_PASSWORD = env_secret(
    "SYNC_ADMIN_PASSWORD",
    "Password of the 'admin' account 'manage.py serve' creates on first run (default: generated)",
)

# --- Metrics ----------------------------------------------------------------------------------
SYNC_METRICS_TOKEN = env_secret(
    "SYNC_METRICS_TOKEN",
    "Bearer token a Prometheus scraper sends to read /metrics. Unset: only staff may read it",
)

# --- Mail store (IMAP, Microsoft Graph) --------------------------------------------------------
MAIL_MAX_MESSAGE_BYTES = env_int(
    "MAIL_MAX_MESSAGE_BYTES",
    25_000_000,
    "Larger messages are stored from their first bytes only, marked truncated.",
    minimum=10_000,
)
MAIL_MAX_BODY_CHARS = env_int(
    "MAIL_MAX_BODY_CHARS",
    1_000_000,
    "Text and HTML bodies are cut (and marked) beyond this.",
    minimum=1000,
)
MAIL_MAX_ATTACHMENT_BYTES = env_int(
    "MAIL_MAX_ATTACHMENT_BYTES",
    10_000_000,
    "Attachments above this keep their metadata only (marked), not their content.",
    minimum=0,
)
MAIL_PARSE_HELPER_FROM = env_int(
    "MAIL_PARSE_HELPER_FROM",
    1000,
    "A fetch of at least this many messages is parsed in a helper process beside the worker "
    "(mail/parse_helper.py) when the worker has at least two CPUs' worth of time (CPU "
    "affinity and its cgroup's CPU limit); 0 = always parse in the worker.",
    minimum=0,
)
SYNC_CA_BUNDLE = env_str(
    "SYNC_CA_BUNDLE",
    "",
    "Extra CA bundle (PEM file) trusted for HTTPS to providers, e.g. behind a TLS proxy.",
)
ZENDESK_BASE_URL = env_str(
    "ZENDESK_BASE_URL",
    "https://{subdomain}.zendesk.com",
    "Base URL of a Zendesk account; {subdomain} is replaced by the connection's subdomain.",
)
ZENDESK_EXPORT_RATE = env_rate(
    "ZENDESK_EXPORT_RATE",
    "10/60",
    "Incremental export requests allowed per account, as 'requests/seconds' (shared by all "
    "workers; '0/60' lifts the limit). Zendesk's own limit is 10 per minute (30 with High "
    "Volume).",
)
IMAP_ALLOW_PLAINTEXT = env_bool(
    "IMAP_ALLOW_PLAINTEXT",
    False,
    "Allow IMAP without TLS to hosts other than localhost (passwords travel in clear text).",
)

# django-q2, built from the settings above. The rules (timeout < retry, ack_failures on,
# max_attempts 1, catch_up off, save_limit 0 or -1) are enforced by the syncqueue.E00x checks.
# Our SyncJob table is the source of truth; a django-q2 task only says "there is work".
Q_CLUSTER = {
    "name": SYNC_QUEUE_NAME,
    "orm": "default",
    "workers": SYNC_WORKERS,
    "timeout": SYNC_TASK_TIMEOUT,
    "retry": SYNC_TASK_RETRY,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": env_int(
        "SYNC_Q_SAVE_LIMIT", -1, "django-q2 result rows: -1 keeps no successes, 0 keeps all."
    ),
    "bulk": env_int(
        "SYNC_Q_BULK", 5, "Most tasks a cluster dequeues at once (one per free worker).", minimum=1
    ),
    "poll": env_float("SYNC_Q_POLL", 0.2, "Seconds an idle cluster waits between polls."),
    "recycle": 500,
    "label": "Task queue (django-q2)",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_str("LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    },
    # django-axes says "login failed, running database handler" at INFO for every attempt;
    # lockouts (WARNING) are what an operator needs.
    "loggers": {"axes": {"level": "WARNING"}},
}

SYNC_BROKER_URL = env_str(
    "SYNC_BROKER_URL",
    "",
    "Redis URL for django-q2's tickets, e.g. redis://127.0.0.1:6379/0 (needs the 'redis' "
    "extra); empty = the database (ORM broker). See 'Beyond one database's broker'.",
)
if SYNC_BROKER_URL:
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = SYNC_BROKER_URL

# django-q2 warns at import when timeout is missing; ours is always set, the check enforces it.
warnings.filterwarnings("ignore", message=".*retry.*timeout.*", module="django_q.*")
