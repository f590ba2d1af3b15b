"""The server `make run` starts (`manage.py serve`: gunicorn with billing_site.server.Worker),
spoken to over a real socket: what only a real HTTP server can show."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog.models import Customer
from tests.accounts.factories import make_api_key
from tests.conftest import shared_database_url

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(transactional_db):
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": shared_database_url()}
    command = [
        sys.executable,
        "manage.py",
        "serve",
        "--no-worker",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        command,
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    yield port
    process.terminate()
    process.wait(timeout=30)


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read the whole answer (the server closes or says how long it is)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)  # all is sent: a truncated body ends here
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def test_a_chunked_body_is_read_in_full(server, project):
    _, secret = make_api_key(project)
    body = json.dumps({"external_id": "chunked", "name": "Initech", "currency": "EUR"}).encode()
    chunks = (
        b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:]))
        + b"0\r\n\r\n"
    )

    status, _, answer = _raw(
        server,
        b"POST /v1/customers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {secret}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + chunks,
    )

    assert status == 201, answer
    customer = Customer.objects.get(project=project)
    assert (customer.external_id, customer.name, customer.currency) == ("chunked", "Initech", "EUR")


def test_a_header_over_the_limit_answers_431_in_the_envelope(server, project):
    status, headers, answer = _raw(
        server,
        b"GET /v1/customers HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n",
    )

    assert status == 431
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {
        "error": {
            "type": "invalid_request",
            "code": "header_too_large",
            "message": "A request header, or the headers together, are larger than the server accepts.",
            "param": None,
        }
    }


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}", b"2\r\n{}\r\n", b"-5\r\n{}\r\n0\r\n\r\n"],
    ids=["bad size", "truncated", "no last chunk", "negative size"],
)
def test_a_malformed_chunked_body_is_400_in_the_envelope(server, project, chunks):
    status, _, answer = _raw(
        server,
        b"POST /v1/products HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks,
    )

    assert status == 400
    assert json.loads(answer)["error"]["code"] in {"invalid_http_request", "invalid_json"}
