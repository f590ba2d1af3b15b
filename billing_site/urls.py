from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from billing_site.api.views import HealthView
from payments.api.stripe_webhooks import stripe_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("docs/redoc/", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    path("v1/", include("billing_site.api.urls")),
    path("webhooks/stripe/<str:project_id>/", stripe_webhook, name="stripe-webhook"),
]

handler400 = "billing_site.api.views.bad_request"
handler404 = "billing_site.api.views.not_found"
handler500 = "billing_site.api.views.server_error"
