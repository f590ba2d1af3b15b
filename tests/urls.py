"""The real URLs plus a few views that exist only to exercise the API conventions in tests."""

import time

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Scope
from accounts.services import audit_record
from billing_site.errors import InvalidState


class SlowWriteView(APIView):
    """Writes one audit row, then takes its time: concurrent requests overlap for sure."""

    def post(self, request):
        entry = audit_record(project=request.auth.project, actor=request.auth, action="test.slow_write")
        time.sleep(float(request.data.get("sleep", 0)))
        return Response({"entry": entry.pk}, status=201)


class FailingWriteView(APIView):
    """Writes, then fails: with status 500 (crash) or 422 (business rule)."""

    def post(self, request):
        audit_record(project=request.auth.project, actor=request.auth, action="test.failing_write")
        if request.data.get("fail") == "state":
            raise InvalidState("Not now.", current="open", requested="draft")
        raise RuntimeError("boom")


class IngestLikeView(APIView):
    rate_limit_scope = "ingest"
    required_scopes = {"POST": Scope.USAGE_WRITE}

    def post(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("v1/test/slow-write", SlowWriteView.as_view()),
    path("v1/test/failing-write", FailingWriteView.as_view()),
    path("v1/test/ingest", IngestLikeView.as_view()),
    path("", include("billing_site.urls")),
]

handler400 = "billing_site.api.views.bad_request"
handler404 = "billing_site.api.views.not_found"
handler500 = "billing_site.api.views.server_error"
