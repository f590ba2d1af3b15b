from base64 import b64decode
from urllib import parse

from rest_framework import pagination
from rest_framework.exceptions import NotFound

from billing_site.errors import InvalidInput, Unprocessable

MAX_LIMIT = 100


class CursorPagination(pagination.CursorPagination):
    """Stable cursor pages, newest first: `?limit=` (1 to 100, default 20) and `?cursor=` from
    `next`/`previous`. Cursors survive concurrent inserts, unlike page numbers.

    A `limit` that is not a whole number from 1 to 100 is refused (400), never quietly replaced by
    the default; a cursor this API did not hand out is 422 `invalid_cursor`.
    """

    ordering = "-id"
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidInput(
                f"limit is a whole number from 1 to {MAX_LIMIT}.", code="invalid_limit", param="limit"
            )
        return int(raw)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        if encoded == "":
            raise InvalidInput("Leave the parameter out instead.", code="blank", param="cursor")
        invalid = Unprocessable(
            "This cursor was not handed out by this list; use `next` or `previous` as given.",
            code="invalid_cursor",
            param="cursor",
        )
        try:
            cursor = super().decode_cursor(request)
            tokens = parse.parse_qs(b64decode(encoded).decode("ascii"))
        except (NotFound, ValueError):
            raise invalid from None
        # A cursor this class wrote: its keys only, and a position that is an id (ordering is by
        # id; anything else would reach the query).
        if (
            not tokens
            or not set(tokens) <= {"o", "r", "p"}
            or (cursor.position is not None and not cursor.position.isdigit())
        ):
            raise invalid
        return cursor

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=MAX_LIMIT, default=self.page_size)
        return parameters
