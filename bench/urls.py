from django.http import HttpResponse
from django.urls import path

from billing_site.urls import handler400, handler404, handler500, urlpatterns  # noqa: F401


def bare(request):
    return HttpResponse(b'{"ok":true}', content_type="application/json")


urlpatterns = [path("bench/bare", bare), *urlpatterns]
