from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from meters.api.views import CustomerUsageView, MeterViewSet, UsageIngestView, UsageSummaryView

router = SimpleRouter(trailing_slash=False)
router.register("meters", MeterViewSet, basename="meter")
urlpatterns = [
    path("usage", UsageIngestView.as_view(), name="usage-ingest"),
    path("usage/summary", UsageSummaryView.as_view(), name="usage-summary"),
    re_path(r"^customers/(?P<id>[A-Za-z0-9_]+)/usage$", CustomerUsageView.as_view(), name="customer-usage"),
    *router.urls,
]
