from django.urls import re_path
from rest_framework.routers import SimpleRouter

from webhooks.api.views import ActivityViewSet, WebhookDeliveryViewSet, WebhookEndpointViewSet

router = SimpleRouter(trailing_slash=False)
router.register("activity", ActivityViewSet, basename="activity")
router.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
urlpatterns = [
    re_path(
        r"^webhook-endpoints/(?P<id>[A-Za-z0-9_]+)/deliveries$",
        WebhookDeliveryViewSet.as_view({"get": "list"}),
        name="webhook-endpoint-deliveries",
    ),
    *router.urls,
]
