"""OpenAPI conventions added to every operation, so the schema documents what the API does:
the error envelope on each error status, the Idempotency-Key header on writes, and the
rate-limit headers."""

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers

from billing_site.api.fields import RejectUnknownFieldsMixin

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message", "param"],
            "properties": {
                "type": {
                    "type": "string",
                    "enum": sorted(
                        {
                            "invalid_request",
                            "authentication_error",
                            "permission_error",
                            "conflict",
                            "invalid_state",
                            "rate_limit_error",
                            "api_error",
                        }
                    ),
                },
                "code": {
                    "type": "string",
                    "description": "Stable machine-readable code.",
                    "example": "required",
                },
                "message": {"type": "string"},
                "param": {
                    "type": ["string", "null"],
                    "description": "The field at fault, e.g. `events[3].value`.",
                },
                "errors": {
                    "type": "array",
                    "description": "Every fault, when a validation failure has several.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        }
    },
}

_ERRORS = {
    "400": "The request does not have the documented shape (see `error.code` and `error.param`).",
    "401": "Missing, invalid or revoked API key.",
    "403": "The API key lacks the scope this operation needs.",
    "404": "No such object in this project.",
    "409": "Idempotency-Key reused with another body or still in flight, or a conflicting write "
    "(a code or external ID already taken, an object still in use).",
    "411": "A chunked body the server cannot read: send a Content-Length.",
    "414": "The request line (method, path and query) is too long.",
    "417": "An `Expect` header the server does not meet.",
    "413": "Request body too large.",
    "415": "The body is not JSON, or its Content-Encoding is not gzip.",
    "422": "The request has the documented shape but cannot be carried out: it names an object that "
    "does not exist or cannot be used, breaks a rule between fields, or the object's state does not "
    "allow it (`error.code` says which).",
    "429": "Rate limited; retry after `Retry-After` seconds.",
    "431": "A request header, or all of them together, is too large.",
}

_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed per minute for this key and kind of request.",
    "X-RateLimit-Remaining": "Requests left in the current minute.",
    "X-RateLimit-Reset": "Unix time at which the current minute ends.",
}


class AutoSchema(BaseAutoSchema):
    """Documents a ServiceViewSet's write serializers as its request bodies, and states that a
    request body refusing unknown fields (RejectUnknownFieldsMixin) takes no other properties."""

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        # A JSON Schema given as is (the usage ingestion body) describes a body the view reads
        # itself, and there is no request without one; nor is there without a field required
        # under one of its names (field_aliases: the schema's `required` cannot list it).
        return schema, required or isinstance(serializer, dict) or _requires_an_alias(serializer)

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.ListField | serializers.ListSerializer) and not field.allow_empty:
            schema.setdefault("minItems", 1)
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        instance = force_instance(serializer)
        if direction == "request" and isinstance(instance, RejectUnknownFieldsMixin):
            schema["additionalProperties"] = False
            _add_aliases(schema, instance.field_aliases)
        return schema

    def get_request_serializer(self):
        attribute = {"create": "create_serializer_class", "partial_update": "update_serializer_class"}.get(
            getattr(self.view, "action", None)
        )
        serializer_class = getattr(self.view, attribute, None) if attribute else None
        if attribute == "update_serializer_class" and serializer_class is None:
            serializer_class = getattr(self.view, "create_serializer_class", None)
        if serializer_class is not None:
            return serializer_class(partial=attribute == "update_serializer_class")
        return super().get_request_serializer()


def _requires_an_alias(serializer) -> bool:
    instance = force_instance(serializer)
    if not isinstance(instance, RejectUnknownFieldsMixin) or instance.partial:
        return False
    return any(instance.fields[name].required for name in instance.field_aliases.values())


def _add_aliases(schema: dict, aliases: dict[str, str]) -> None:
    """List each alias beside its field; a required field is then required under exactly one name."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    one_of = []
    for alias, name in aliases.items():
        properties[alias] = {**properties[name], "description": f"Another name for `{name}`."}
        if name in required:
            required.remove(name)
            one_of.append({"oneOf": [{"required": [name]}, {"required": [alias]}]})
        else:
            one_of.append({"not": {"required": [name, alias]}})
    if not required:
        schema.pop("required", None)
    if one_of:
        schema["allOf"] = one_of


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": (
        "Makes a retry safe: the first response is stored for 24 h and replayed with "
        "`Idempotent-Replayed: true`. The same key with another body answers 409 "
        "`idempotency_key_reused`; while the first request runs, 409 `idempotency_key_in_use`."
    ),
}


def _error_statuses(method: str, path: str, operation: dict) -> list[str]:
    """Every error status the operation can answer (docs/api.md, "Errors"). 414, 417 and 431 come
    from the server itself (billing_site.server), for any route."""
    statuses = ["400", "401", "403", "414", "417", "429", "431"]
    if "{" in path:
        statuses.append("404")
    if method in {"post", "patch"}:
        statuses += ["409", "411", "413", "415", "422"]
        operation.setdefault("parameters", []).append(IDEMPOTENCY_HEADER)
    if method == "delete":
        statuses.append("409")  # still in use: archive it instead
    if any(parameter.get("name") == "cursor" for parameter in operation.get("parameters", [])):
        statuses.append("422")  # a cursor this list did not hand out
    return statuses


def _without_nullable(node):
    """OpenAPI 3.0's `nullable: true` (still written by DRF's pagination schema)
    as 3.1 states it: "null" among the types."""
    if isinstance(node, list):
        return [_without_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _without_nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in converted:
        kinds = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
        converted["type"] = [*kinds, "null"] if "null" not in kinds else kinds
    return converted


def add_conventions(result, generator, request, public):
    """drf-spectacular postprocessing hook."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if path == "/v1/openapi.json" or method not in {"get", "post", "patch", "put", "delete"}:
                continue
            # One auth extension yields {"BearerAuth": [], "ApiKeyAuth": []}, which OpenAPI reads
            # as "both"; either header alone authenticates.
            if "security" in operation:
                operation["security"] = [
                    {name: scopes}
                    for requirement in operation["security"]
                    for name, scopes in requirement.items()
                ]
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter["in"] == "query" and schema.get("type") == "string" and "enum" not in schema:
                    schema.setdefault("minLength", 1)  # an empty value is refused: leave it out
            responses = operation.setdefault("responses", {})
            for status in _error_statuses(method, path, operation):
                responses.setdefault(status, {"description": _ERRORS[status]})
            for status, response in responses.items():
                if status[0] in "45":  # errors a view declares itself answer in the envelope too
                    response.setdefault("content", error_ref)
            for status, response in responses.items():
                if status.startswith("2"):
                    response.setdefault("headers", {}).update(
                        {
                            name: {"schema": {"type": "integer"}, "description": text}
                            for name, text in _RATE_LIMIT_HEADERS.items()
                        }
                    )
    return _without_nullable(result)
