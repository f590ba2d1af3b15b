"""A real HTTP receiver on loopback for webhook tests, verifying every delivery it gets with the
`standardwebhooks` library, and django-q2 in sync mode (queued tasks run inline)."""

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from django_q.conf import Conf
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from accounts.models import Project
from tests.accounts.factories import ProjectFactory
from tests.webhooks.factories import record_event
from webhooks.models import Event


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hold: threading.Event | None = None  # wait for this before answering (a slow receiver)
    delay: float = 0.0  # seconds to take before answering (so concurrent senders overlap)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    payload: Any  # what standardwebhooks' verifier returned; None when it refused
    verify_error: str
    status: int  # what the receiver answered


class Receiver:
    """Answers each POST with the next scripted reply (then `default`), and records it."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.secret: str | None = None  # the endpoint's secret, to verify with
        self.default: Reply | Callable[[], Reply] = Reply()
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01})

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def script(self, *replies: Reply | int) -> None:
        self._script.extend(Reply(reply) if isinstance(reply, int) else reply for reply in replies)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        payload, error = None, ""
        try:
            payload = Webhook(self.secret or "").verify(body, headers)
        except (WebhookVerificationError, EmptyWebhookSecretError) as exc:
            error = str(exc) or type(exc).__name__
        with self._lock:
            if self._script:
                reply = self._script.popleft()
            else:
                reply = self.default() if callable(self.default) else self.default
            self.requests.append(Received(path, headers, body, payload, error, reply.status))
        return reply

    def ids(self) -> list[str]:
        return [request.headers["webhook-id"] for request in self.requests]

    def delivered(self) -> list[str]:
        """The `webhook-id`s of the requests answered with a 2xx, in the order they came."""
        return [request.headers["webhook-id"] for request in self.requests if 200 <= request.status < 300]

    def all_verified(self) -> bool:
        return all(request.payload is not None and not request.verify_error for request in self.requests)


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = receiver.handle(self.path, headers, body)
            if reply.hold is not None:
                reply.hold.wait(timeout=5)
            time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


@pytest.fixture
def receiver():
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _django_q_sync(monkeypatch):
    """Tasks queued with async_task run inline, as DESIGN.md §6 says tests run them."""
    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def loopback_project(db) -> Project:
    """A project whose endpoints may be on loopback, where the test receiver listens."""
    return ProjectFactory(name="Acme", allow_private_webhook_urls=True)


@pytest.fixture
def record(django_capture_on_commit_callbacks) -> Callable[..., Event]:
    """Record an event and run what its commit triggers (the queued first attempts)."""

    def record(project: Project, type_: str = "customer.created", data: dict | None = None) -> Event:
        with django_capture_on_commit_callbacks(execute=True):
            return record_event(project, type_, data)

    return record


@pytest.fixture
def deliver(django_capture_on_commit_callbacks) -> Callable[..., str]:
    """Run `manage.py deliver_webhooks` (and what its commits trigger); return its output."""

    def deliver(*args: str) -> str:
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("deliver_webhooks", *args, stdout=out)
        return out.getvalue().strip()

    return deliver
