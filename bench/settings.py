"""The app's settings with one more route, /bench/bare: a bare Django view (no database, no
middleware work beyond Django's own) served by the same server as the API, the yardstick the
benchmarks compare the API's requests/s against."""

from billing_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
