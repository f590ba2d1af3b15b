"""Domain errors that services raise and the API turns into its error envelope.

Services know nothing of HTTP; each error carries the status the API should answer with, a stable
machine code, a human message and, where one field is at fault, its name (`param`).
"""

from typing import Any


class DomainError(Exception):
    status = 400
    type = "invalid_request"
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.extra = extra or {}


class InvalidInput(DomainError):
    """A value does not have the shape the API documents (400): a wrong type, format, length or
    choice. The OpenAPI schema states every such rule, so a request it allows never gets this."""


class Unprocessable(DomainError):
    """The request has the documented shape but cannot be carried out (422): it names an object
    that does not exist or cannot be used, breaks a rule between fields, or a limit no schema can
    state (docs/api.md, "400 or 422")."""

    status = 422


class NotFound(DomainError):
    status = 404
    type = "invalid_request"
    code = "not_found"


class Conflict(DomainError):
    """The write collides with existing data, e.g. a duplicate external id (409)."""

    status = 409
    type = "conflict"
    code = "conflict"


class InvalidState(DomainError):
    """The object is not in a state that allows the operation (422)."""

    status = 422
    type = "invalid_state"
    code = "invalid_state"

    def __init__(self, message: str, *, current: str, requested: str, code: str | None = None) -> None:
        super().__init__(
            message, code=code or "invalid_transition", extra={"current": current, "requested": requested}
        )
