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
    assert sorted(status for status in operation["responses"] if status[0] == "4") == [
        "400", "401", "403", "404", "409", "414", "417", "429", "431",
    ]  # fmt: skip
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] == "4":
                    content = response["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_writes_and_lists_document_every_status_they_answer(schema):
    post = schema["paths"]["/v1/customers"]["post"]["responses"]
    listing = schema["paths"]["/v1/customers"]["get"]["responses"]
    delete = schema["paths"]["/v1/customers/{id}"]["delete"]["responses"]

    assert {"400", "409", "411", "413", "415", "422"} <= set(post)
    assert "422" in listing  # a cursor the list did not hand out
    assert "409" in delete  # still in use


def test_request_bodies_refuse_unknown_fields_as_the_api_does(schema):
    bodies = schema["components"]["schemas"]

    assert bodies["CustomerRequest"]["additionalProperties"] is False
    assert bodies["ApiKeyCreateRequest"]["properties"]["scopes"]["minItems"] == 1
    assert bodies["CustomerRequest"]["properties"]["metadata"]["additionalProperties"] == {
        "type": "string",
        "maxLength": 500,
    }


def test_writes_document_the_idempotency_key(schema):
    parameters = schema["paths"]["/v1/api-keys"]["post"]["parameters"]

    assert [p["name"] for p in parameters if p["in"] == "header"] == ["Idempotency-Key"]


def test_browsable_docs_are_served_without_a_cdn(client):
    response = client.get("/docs/")

    assert response.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in response.content
