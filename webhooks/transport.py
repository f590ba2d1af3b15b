"""The HTTP side of webhooks: which URLs may receive them, and one POST to one of them.

The SSRF rule: a URL is http(s) and every address its host resolves to is public (not loopback,
private, link-local — which includes the 169.254.169.254 metadata service —, shared, reserved,
multicast or unspecified), unless the project allows private URLs. It is checked when an endpoint
is saved and again before every attempt; the attempt then connects to the very address it checked
(the URL's host stays in the Host header, TLS SNI and certificate check), so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot redirect it. Redirects are
not followed, and proxy settings from the environment are ignored for the same reason.
"""

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache

import httpx
from django.utils import timezone

# Characters of a response body kept with each attempt.
RESPONSE_BODY_LIMIT = 4096
# Receivers may ask for a later retry with Retry-After on these statuses.
RETRY_AFTER_STATUSES = frozenset({429, 503})
USER_AGENT = "Billable-Webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(Exception):
    """A webhook URL that may not receive deliveries; `code` is the API's error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class PostResult:
    started_at: datetime
    duration_ms: int
    status_code: int | None  # None when no response came back
    succeeded: bool  # a 2xx within the timeout
    response_body: str
    error: str
    retry_after: timedelta | None  # what a 429/503 asked for


def url_parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise UrlRefused("Not a valid URL.", code="invalid_url") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise UrlRefused("Webhook URLs are http:// or https:// URLs with a host.", code="invalid_url")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UrlRefused("The port must be from 1 to 65535.", code="invalid_url")
    return parsed


def address_is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def url_resolve(url: httpx.URL, *, allow_private: bool) -> IPAddress:
    """The address to connect to: the host's first address, after checking all of them."""
    try:
        infos = socket.getaddrinfo(
            url.raw_host.decode("ascii"),
            url.port or (443 if url.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"The host '{url.host}' does not resolve.", code="url_unresolvable") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        refused = [address for address in addresses if not address_is_public(address)]
        if refused:
            raise UrlRefused(
                f"The host '{url.host}' resolves to a non-public address ({refused[0]}). "
                "Webhooks go to public addresses only, unless the project allows private URLs.",
                code="url_not_allowed",
            )
    return addresses[0]


def url_check(url: str, *, allow_private: bool) -> None:
    """Raise UrlRefused unless the URL may receive webhooks (resolving its host when it matters)."""
    parsed = url_parse(url)
    if not allow_private:
        url_resolve(parsed, allow_private=False)


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


@cache
def _tls_context() -> ssl.SSLContext:
    """One context for every attempt: loading the CA bundle is the slow part of a new client."""
    return httpx.create_ssl_context()


def post(
    *, url: str, allow_private: bool, headers: dict[str, str], body: bytes, timeout: float
) -> PostResult:
    """POST `body` to `url` once, pinned to the address checked, and report what happened.

    Success is a 2xx whose response headers arrive within `timeout` seconds of the start.
    """
    started_at = timezone.now()
    clock = time.monotonic()

    def result(
        *,
        status_code: int | None = None,
        succeeded: bool = False,
        response_body: str = "",
        error: str = "",
        retry_after: timedelta | None = None,
    ) -> PostResult:
        return PostResult(
            started_at=started_at,
            duration_ms=round((time.monotonic() - clock) * 1000),
            status_code=status_code,
            succeeded=succeeded,
            response_body=response_body,
            error=error[:500],
            retry_after=retry_after,
        )

    try:
        parsed = url_parse(url)
        address = url_resolve(parsed, allow_private=allow_private)
    except UrlRefused as refused:
        return result(error=f"{refused.code}: {refused.message}")

    request_headers = {
        **headers,
        "Host": parsed.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # Only the start of the answer is kept: a compressed one could expand to any size.
        "Accept-Encoding": "identity",
    }
    extensions = {"sni_hostname": parsed.raw_host.decode("ascii")} if parsed.scheme == "https" else {}
    # A client per attempt: a pooled connection to the same address could carry another host's TLS.
    with httpx.Client(
        verify=_tls_context(), timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        try:
            with client.stream(
                "POST",
                # Credentials in the URL go in the Authorization header, not in httpx's request log.
                parsed.copy_with(host=str(address), userinfo=b""),
                auth=(parsed.username, parsed.password) if parsed.userinfo else None,
                headers=request_headers,
                content=body,
                extensions=extensions,
            ) as response:
                in_time = time.monotonic() - clock <= timeout
                response_body = _read_truncated(response)
        except httpx.TimeoutException:
            return result(error=f"timeout: no response within {timeout:g} s")
        except httpx.HTTPError as exc:
            return result(error=f"{type(exc).__name__}: {exc}")
    succeeded = 200 <= response.status_code < 300 and in_time
    retry_after = None
    if response.status_code in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=timezone.now())
    return result(
        status_code=response.status_code,
        succeeded=succeeded,
        response_body=response_body,
        error="" if in_time else f"timeout: response after more than {timeout:g} s",
        retry_after=retry_after,
    )


def _read_truncated(response: httpx.Response) -> str:
    """The start of the body, without reading more than needed (a receiver may send a lot)."""
    # UTF-8 takes at most 4 bytes a character, so this many bytes cover the characters kept.
    wanted = RESPONSE_BODY_LIMIT * 4
    chunks, size = [], 0
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= wanted:
                break
    except httpx.HTTPError:
        pass  # the status already decided the outcome; a broken body is only less to show
    return b"".join(chunks)[:wanted].decode("utf-8", errors="replace")[:RESPONSE_BODY_LIMIT]
