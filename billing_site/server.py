"""The gunicorn worker `manage.py serve` runs: gunicorn's threaded worker, except that the requests
gunicorn refuses before Django sees them (a header over the size limit, a malformed request line,
a bad chunk) are answered in the API's JSON error envelope instead of gunicorn's HTML page.
"""

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from billing_site.api.errors import envelope

# Gunicorn's status for a request it refused → the envelope's stable code.
_CODES = {
    400: "invalid_http_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "header_too_large",
    500: "internal_error",
    501: "unsupported_transfer_coding",
}
_MESSAGES = {
    414: "The request line (method, path and query) is longer than the server accepts.",
    431: "A request header, or the headers together, are larger than the server accepts.",
    500: "Something went wrong on our side. It has been logged.",
}


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's replacement: the same response, with a JSON body."""
    body = json.dumps(
        envelope(
            status=status_int,
            code=_CODES.get(status_int, "invalid_http_request"),
            message=_MESSAGES.get(status_int) or mesg or reason,
        ),
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


class Worker(ThreadWorker):
    def init_process(self):
        # gunicorn writes its own error responses through this module function (handle_error in
        # gunicorn/workers/base.py); this process serves only this application, so it is replaced
        # here, once, before the first request.
        util.write_error = write_error
        super().init_process()
