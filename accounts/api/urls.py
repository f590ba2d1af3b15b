from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api.views import ApiKeyViewSet, ProjectView

router = SimpleRouter(trailing_slash=False)
router.register("api-keys", ApiKeyViewSet, basename="api-key")
urlpatterns = [path("project", ProjectView.as_view(), name="project"), *router.urls]
