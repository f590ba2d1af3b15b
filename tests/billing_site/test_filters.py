"""List filters are built once per FilterSet class, and still judge each request on its own."""

import pytest
from django.http import QueryDict

from meters.api.views import MeterFilter
from meters.models import Meter
from tests.catalog.factories import MeterFactory
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_a_filtersets_form_class_is_built_once():
    first = MeterFilter(QueryDict("code=a"), queryset=Meter.objects.none())
    second = MeterFilter(QueryDict("archived=maybe"), queryset=Meter.objects.none())

    assert first.get_form_class() is second.get_form_class()
    assert first.is_valid()
    assert not second.is_valid()
    assert first.is_valid()  # the second's errors stay its own


def test_one_requests_filter_does_not_leak_into_the_next(project):
    MeterFactory(project=project, code="calls")
    MeterFactory(project=project, code="bytes")
    client = api_client(project)

    refused = client.get("/v1/meters?archived=maybe")
    calls = client.get("/v1/meters?code=calls")
    every = client.get("/v1/meters")
    blank = client.get("/v1/meters?code=")

    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "archived"
    assert [meter["code"] for meter in calls.json()["results"]] == ["calls"]
    assert [meter["code"] for meter in every.json()["results"]] == ["bytes", "calls"]
    assert (blank.status_code, blank.json()["error"]["code"]) == (400, "blank")
