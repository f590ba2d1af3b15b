from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Stable cursor pages, newest first: `?limit=` (1 to 100, default 20) and `?cursor=` from
    `next`/`previous`. Cursors survive concurrent inserts, unlike page numbers."""

    ordering = "-id"
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
