"""HTTPS deliveries connect to the address that was checked, yet still verify the URL's host name."""

import shutil
import ssl
import subprocess

import pytest

from tests.conftest import require
from tests.webhooks.conftest import Receiver
from tests.webhooks.factories import make_endpoint
from webhooks import transport
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    require(shutil.which("openssl") is not None, "openssl (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603 - fixed arguments, openssl from PATH
    return str(cert), str(key)


@pytest.fixture
def tls_receiver(request, tmp_path, monkeypatch):
    """A receiver behind TLS with a certificate for the name given by the test's parameter,
    trusted by the sender as if a public CA had issued it."""
    cert, key = _self_signed(tmp_path, request.param)
    monkeypatch.setattr(transport, "_tls_context", lambda: ssl.create_default_context(cafile=cert))
    receiver = Receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("tls_receiver", ["localhost"], indirect=True)
def test_https_is_sent_to_the_checked_address_with_the_hosts_name(loopback_project, tls_receiver, record):
    port = tls_receiver.server.server_address[1]
    endpoint = make_endpoint(loopback_project, url=f"https://localhost:{port}/hooks")
    tls_receiver.secret = endpoint.secret

    record(loopback_project)

    [got] = tls_receiver.requests
    assert got.headers["host"] == f"localhost:{port}"
    assert tls_receiver.all_verified()
    assert Delivery.objects.get().status == "succeeded"


@pytest.mark.parametrize("tls_receiver", ["billing.example.com"], indirect=True)
def test_a_certificate_for_another_name_is_refused(loopback_project, tls_receiver, record):
    port = tls_receiver.server.server_address[1]
    make_endpoint(loopback_project, url=f"https://localhost:{port}/hooks")

    record(loopback_project)

    assert tls_receiver.requests == []
    attempt = Delivery.objects.get().attempts.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert "Hostname mismatch" in attempt.error
