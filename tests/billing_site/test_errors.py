import pytest
from rest_framework.exceptions import ErrorDetail
from rest_framework.test import APIClient

from accounts.models import Scope
from accounts.services import api_key_revoke
from billing_site.api.errors import flatten_errors
from tests.accounts.factories import make_api_key
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_no_key_is_401_in_the_envelope(project):
    response = APIClient().get("/v1/api-keys")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "type": "authentication_error",
            "code": "missing_api_key",
            "message": "No API key. Send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'.",
            "param": None,
        }
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="billable"'


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"HTTP_AUTHORIZATION": "Bearer bk_nope"}, "invalid_api_key"),
        ({"HTTP_X_API_KEY": "bk_nope"}, "invalid_api_key"),
        ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, "invalid_authorization_header"),
    ],
)
def test_bad_key_is_401_with_its_code(project, header, code):
    response = APIClient().get("/v1/api-keys", **header)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


def test_x_api_key_header_authenticates(project):
    _, secret = make_api_key(project)

    response = APIClient().get("/v1/api-keys", HTTP_X_API_KEY=secret)

    assert response.status_code == 200


def test_revoked_key_is_401(project):
    api_key, secret = make_api_key(project)
    api_key_revoke(api_key=api_key, actor=None)

    response = APIClient().get("/v1/api-keys", HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"


def test_read_only_key_on_a_write_is_403(project):
    client = api_client(project, [Scope.BILLING_READ])

    response = client.post("/v1/api-keys", {"name": "x", "scopes": ["billing:read"]}, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == {
        "type": "permission_error",
        "code": "insufficient_scope",
        "message": "This API key lacks the 'billing:update' scope.",
        "param": None,
    }


def test_unknown_route_is_404_in_the_envelope(api):
    response = api.get("/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_object_is_404(api):
    response = api.get("/v1/api-keys/key_doesnotexist")

    assert response.status_code == 404
    assert response.json()["error"] == {
        "type": "invalid_request",
        "code": "not_found",
        "message": "No such API key: 'key_doesnotexist'.",
        "param": None,
    }


def test_wrong_method_is_405(api):
    response = api.put("/v1/api-keys", {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_malformed_json_is_400(api):
    response = api.generic("POST", "/v1/api-keys", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_validation_error_names_the_field(api):
    response = api.post("/v1/api-keys", {"name": "x", "scopes": ["billing:read", "root"]}, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request",
        "code": "invalid_choice",
        "message": '"root" is not a valid choice.',
        "param": "scopes[1]",
    }


def test_several_faults_are_all_listed(api):
    response = api.post("/v1/api-keys", {"scopes": []}, format="json")

    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("required", "name")
    assert [(e["param"], e["code"]) for e in error["errors"]] == [("name", "required"), ("scopes", "empty")]


def test_nested_errors_flatten_to_paths():
    detail = {
        "events": [{}, {}, {}, {"value": [ErrorDetail("Must be whole.", code="value_not_integer")]}],
        "billing_address": {"country": [ErrorDetail("Unknown.", code="invalid_country")]},
        "non_field_errors": [ErrorDetail("Bad.", code="bad")],
    }

    assert flatten_errors(detail) == [
        {"param": "events[3].value", "code": "value_not_integer", "message": "Must be whole."},
        {"param": "billing_address.country", "code": "invalid_country", "message": "Unknown."},
        {"param": None, "code": "bad", "message": "Bad."},
    ]


@pytest.mark.urls("tests.urls")
def test_crash_is_500_in_the_envelope(project):
    client = api_client(project)
    client.raise_request_exception = False

    response = client.post("/v1/test/failing-write", {}, format="json")

    assert response.status_code == 500
    assert response.json()["error"] == {
        "type": "api_error",
        "code": "internal_error",
        "message": "Something went wrong on our side. It has been logged.",
        "param": None,
    }


@pytest.mark.urls("tests.urls")
def test_domain_state_error_is_422_with_states(project):
    client = api_client(project)

    response = client.post("/v1/test/failing-write", {"fail": "state"}, format="json")

    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "invalid_state",
        "code": "invalid_transition",
        "message": "Not now.",
        "param": None,
        "current": "open",
        "requested": "draft",
    }


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
