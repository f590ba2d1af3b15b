import os
import socket
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from rest_framework.test import APIClient

from accounts.models import ALL_SCOPES, Project
from billing_site.api.authentication import api_key_cache_clear
from tests.accounts.factories import ProjectFactory, make_api_key

# In CI (BILLABLE_STRICT_TESTS=1) a missing tool fails the test instead of skipping it.
STRICT = os.environ.get("BILLABLE_STRICT_TESTS") == "1"
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


# The tools some tests needed and did not find, for the summary line `make test` ends with.
MISSING_TOOLS: set[str] = set()


def require(available: bool, what: str) -> None:
    """Skip the test (fail it in CI) when a tool it drives is missing; `what` says how to get it."""
    if available:
        return
    if STRICT:
        pytest.fail(f"{what} is required when BILLABLE_STRICT_TESTS=1")
    MISSING_TOOLS.add(what)
    pytest.skip(f"{what} is not available here")


def pytest_terminal_summary(terminalreporter):
    """One line saying what was skipped for a missing tool, and how to get the tool."""
    if not MISSING_TOOLS:
        return
    reports = terminalreporter.stats.get("skipped", [])
    count = sum("is not available here" in str(report.longrepr) for report in reports)
    terminalreporter.write_line(
        f"{count} tests skipped for a missing tool: {'; '.join(sorted(MISSING_TOOLS))}. "
        "`.ci/system-packages` installs the system ones (as root).",
        yellow=True,
    )


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgresql://…)")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip)


def shared_database_url() -> str:
    """DATABASE_URL for a process of its own (a server, a command) to use the test database."""
    database = settings.DATABASES["default"]
    if not ON_POSTGRES:
        return f"sqlite:///{database['NAME']}"
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    return (
        f"postgresql://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


def api_client(project: Project, scopes: list[str] | None = None) -> APIClient:
    """A client authenticated with a new key of the project (all scopes unless given)."""
    _, secret = make_api_key(project, scopes or list(ALL_SCOPES))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture(autouse=True)
def _fresh_api_key_cache():
    """Each test starts with this process's API-key cache empty, as a new web process does."""
    api_key_cache_clear()


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded files (contracts, logos) go to a per-test directory, not var/media."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def project(db) -> Project:
    return ProjectFactory(name="Acme", invoice_number_prefix="ACME")


@pytest.fixture
def other_project(db) -> Project:
    return ProjectFactory(name="Globex")


@pytest.fixture
def api(project) -> APIClient:
    return api_client(project)


@dataclass
class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: bool = False

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        if self.refuse:
            return "451 Try again later"
        message = BytesParser(policy=email_policy.default).parsebytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp_server(settings):
    """Django's SMTP backend pointed at a local aiosmtpd server for the test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = SmtpServer(port=port)
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS, settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = False, "", ""
    try:
        yield server
    finally:
        controller.stop()
