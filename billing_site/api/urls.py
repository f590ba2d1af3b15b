"""Every app's API routes under /v1/."""

from django.urls import include, path

urlpatterns = [
    path("", include("accounts.api.urls")),
    path("", include("meters.api.urls")),
    path("", include("catalog.api.urls")),
    path("", include("subscriptions.api.urls")),
    path("", include("invoicing.api.urls")),
    path("", include("payments.api.urls")),
    path("", include("webhooks.api.urls")),
]
