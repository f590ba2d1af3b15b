"""localstripe (a fake Stripe API server from PyPI) as the payment tests run it.

Two things differ from `localstripe --port N`: nothing is written to disk (each test session
starts empty, and parallel workers do not share a file), and `Idempotency-Key` is honoured as
Stripe documents it — a repeated POST with the same key is answered with the first response,
errors included — which localstripe itself ignores. Billable's "never charge twice" rests on that
header, so the tests need a server that behaves like Stripe there.

Run: python -m tests.payments.localstripe_server PORT
"""

import sys

from aiohttp import web
from localstripe import resources, server

_answers: dict[tuple[str, str], tuple[int, bytes, str]] = {}


@web.middleware
async def idempotency(request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    cache_key = (request.headers.get("Authorization", ""), key)
    if cache_key in _answers:
        status, body, content_type = _answers[cache_key]
        return web.Response(
            status=status, body=body, content_type=content_type, headers={"Idempotent-Replayed": "true"}
        )
    response = await handler(request)
    _answers[cache_key] = (response.status, response.body, response.content_type)
    return response


def main() -> None:
    resources.store.dump_to_disk = lambda: None
    server.app.middlewares.insert(0, idempotency)
    web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
