"""Settings, read from environment variables only.

Every variable is documented in docs/configuration.md with its default and an example. Nothing
here talks to the network at import time, and nothing differs between "dev" and "prod" except what
the environment says.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env(name: str) -> str | None:
    """The variable's value; None when it is unset or blank (`DATABASE_URL= make run` means the
    default, not an empty URL)."""
    raw = os.environ.get(name)
    return raw if raw is not None and raw.strip() else None


def env_str(name: str, default: str) -> str:
    raw = _env(name)
    return default if raw is None else raw


def env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of {sorted(_TRUE | _FALSE)}, not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = _env(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# Where local state lives when nothing else is configured: the SQLite database, uploaded
# documents and the generated secret key.
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR.

    A hard-coded fallback would be a shared secret across every installation; a generated file
    gives `make run` zero-setup without that hole.
    """
    configured = os.environ.get("SECRET_KEY")
    if configured:
        return configured
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
SITE_URL = env_str("SITE_URL", "http://localhost:8000").rstrip("/")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [SITE_URL])
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "billing_site",
    "accounts",
    "catalog",
    "subscriptions",
    "meters",
    "invoicing",
    "payments",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "billing_site.middleware.ApiGatewayMiddleware",
]

ROOT_URLCONF = "billing_site.urls"
WSGI_APPLICATION = "billing_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database --------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'billable.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        # WAL lets the web server and the worker read while one of them writes; IMMEDIATE takes
        # the write lock at BEGIN so two writers queue on the busy timeout instead of failing.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    # Django opens psycopg connections with prepare_threshold=None, which disables preparing
    # altogether (psycopg then ignores prepare=True). Any number enables it: Django's own cursors
    # bind client-side and never prepare, so only meters.storage.fetch_prepared's statements (the
    # ingestion lookup and insert) are prepared, once per connection. Behind PgBouncer in
    # transaction mode that needs PgBouncer 1.21+ (max_prepared_statements > 0); for an older one,
    # DB_PREPARED_STATEMENTS=false.
    _db["OPTIONS"] = {
        **_db.get("OPTIONS", {}),
        "prepare_threshold": 5 if env_bool("DB_PREPARED_STATEMENTS", True) else None,
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis (optional) ------------------------------------------------------------------------
# Without Redis, rate-limit counters live in the database and django-q2 uses the ORM broker.
REDIS_URL = env_str("REDIS_URL", "")

# --- Internationalisation --------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and uploaded files ---------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Plain copies: compressing every bundle (Swagger UI, Redoc) would add ~15 s to every start.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Issued invoice and credit note PDFs (invoicing.models.Document): local files under
    # MEDIA_ROOT/documents by default; any django-storages backend (S3, GCS, Azure) by naming its
    # class here and configuring it through its own settings.
    "documents": {
        "BACKEND": env_str("BILLABLE_DOCUMENTS_STORAGE", "django.core.files.storage.FileSystemStorage")
    },
}

# --- Payments ---------------------------------------------------------------------------------
# Where Stripe's API is: a local fake (localstripe, docs/payments.md) in tests and trials.
STRIPE_API_BASE = env_str("BILLABLE_STRIPE_API_BASE", "https://api.stripe.com")
# A charge or a refund waits this long for Stripe before the attempt is abandoned; it is repeated
# with the same idempotency key, so an answer that was lost is not charged twice.
STRIPE_TIMEOUT_SECONDS = env_int("BILLABLE_STRIPE_TIMEOUT_SECONDS", 30)

# --- Email -----------------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# A mail server that stops answering fails the attempt (it is retried) instead of holding a worker;
# well inside the claim lease of an invoice email (invoicing.emails.CLAIM_LEASE, 10 minutes).
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_SECONDS", 30)
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.filebased.EmailBackend",
)
# Without a mail server, emails (invoices with their PDF attached) are written here, one file per
# message, rather than printed over the server's log.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(DATA_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "billing@localhost")
# Any django-anymail provider: EMAIL_BACKEND=anymail.backends.<provider>.EmailBackend and its
# settings as ANYMAIL_<SETTING> environment variables (ANYMAIL_POSTMARK_SERVER_TOKEN=…,
# ANYMAIL_MAILGUN_API_KEY=…), read here into the ANYMAIL dict anymail takes them from.
ANYMAIL = {
    name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")
}
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- API -------------------------------------------------------------------------------------
# Largest request body the API reads, after gzip decoding; larger bodies get 413.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 5 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# How long an Idempotency-Key's stored response is replayed.
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24)
# A request still "in flight" after this long is treated as crashed and its key can be reused.
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS = env_int("IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS", 300)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["billing_site.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["billing_site.api.permissions.HasScope"],
    "DEFAULT_PAGINATION_CLASS": "billing_site.api.pagination.CursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "billing_site.api.schema.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["billing_site.api.codecs.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["billing_site.api.codecs.JSONParser"],
    "EXCEPTION_HANDLER": "billing_site.api.errors.exception_handler",
    # The API answers JSON whatever Accept says (never 406), and `?format=` is an ordinary
    # parameter, not a renderer switch (never 404).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "billing_site.api.codecs.JSONOnly",
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 20,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Billable API",
    "DESCRIPTION": (
        "Usage-based billing: report usage, manage customers, plans and subscriptions, read "
        "invoices. Authenticate with `Authorization: Bearer <key>` or `X-Api-Key: <key>`. Every "
        'error uses one envelope: `{"error": {"type", "code", "message", "param"}}`. '
        "POST and PATCH accept an `Idempotency-Key` header."
    ),
    "VERSION": "1",
    # 3.1: its schemas are JSON Schema 2020-12, the dialect JSON-valued fields are validated with
    # (billing_site.api.fields.SchemaJSONField), so the document and the validation are one.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "FeeTimingEnum": "catalog.pricing.FeeTiming",
        "ApiKeyStatusEnum": "accounts.models.ApiKeyStatus",
        "ChargeKindEnum": "catalog.pricing.ChargeKind",
        "CouponKindEnum": "catalog.models.CouponKind",
        "CouponDurationEnum": "catalog.models.CouponDuration",
        "TaxStatusEnum": "catalog.models.TaxStatus",
    },
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing_site.api.schema.add_conventions",
    ],
}

# --- Webhooks --------------------------------------------------------------------------------
# An attempt succeeds on a 2xx whose response headers arrive within this many seconds.
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 15)

# --- Background jobs (django-q2) --------------------------------------------------------------
Q_CLUSTER = {
    "name": "billable",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT_SECONDS", 600),
    "retry": env_int("Q_TIMEOUT_SECONDS", 600) + 60,
    "catch_up": False,
    "ack_failures": True,
    "max_attempts": 1,
    "sync": env_bool("Q_SYNC", False),
    "poll": 1,
}
if REDIS_URL and env_str("Q_BROKER", "orm") == "redis":
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Web server (`manage.py serve`, used by `make run`) ----------------------------------------
HOST = env_str("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)
# One process with threads is the right default for SQLite (one writer at a time); on PostgreSQL,
# one process a core: Python runs one thread at a time per process, so a request's CPU work
# scales with processes, while the threads of each (4) overlap waiting on the database and
# share a group commit (meters.group_commit). Measured in docs/performance.md (Web server).
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 1 if _db["ENGINE"].endswith("sqlite3") else os.cpu_count() or 2)
WEB_THREADS = env_int("WEB_THREADS", 4)

# --- Logging ---------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # WeasyPrint logs every rendering step at INFO, fontTools every font subset, and the stripe
    # library every request and response.
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
        "stripe": {"level": "WARNING"},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Group commit of single usage events (meters/group_commit.py, docs/usage.md) ----------------
# On PostgreSQL, single-event POST /v1/usage requests that one process serves at once share one
# insert and one commit. A group's first request waits for the others already being prepared, at
# most this many milliseconds (0: every request commits alone) and this many events; every
# request of the group waits for the group's commit, as it would for its own.
USAGE_GROUP_COMMIT_WINDOW_MS = env_int("USAGE_GROUP_COMMIT_WINDOW_MS", 2)
USAGE_GROUP_COMMIT_MAX_EVENTS = env_int("USAGE_GROUP_COMMIT_MAX_EVENTS", 100)
if USAGE_GROUP_COMMIT_WINDOW_MS < 0 or USAGE_GROUP_COMMIT_MAX_EVENTS < 1:
    raise ImproperlyConfigured(
        "USAGE_GROUP_COMMIT_WINDOW_MS must be 0 or more, USAGE_GROUP_COMMIT_MAX_EVENTS 1 or more."
    )
