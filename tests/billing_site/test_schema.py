import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_schema_documents_both_ways_to_authenticate(schema):
    assert schema["components"]["securitySchemes"] == {
        "BearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"},
        "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    }
    assert schema["paths"]["/v1/api-keys"]["get"]["security"] == [{"BearerAuth": []}, {"ApiKeyAuth": []}]


def test_every_operation_documents_the_error_envelope(schema):
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    operation = schema["paths"]["/v1/api-keys/{id}"]["delete"]
    for status in ("400", "401", "403", "404", "422", "429"):
        content = operation["responses"][status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/Error"}


def test_writes_document_the_idempotency_key(schema):
    parameters = schema["paths"]["/v1/api-keys"]["post"]["parameters"]

    assert [p["name"] for p in parameters if p["in"] == "header"] == ["Idempotency-Key"]


def test_browsable_docs_are_served_without_a_cdn(client):
    response = client.get("/docs/")

    assert response.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in response.content
