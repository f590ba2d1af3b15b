"""Standard Webhooks v1: the secret, the body and the three headers of a delivery.

Signing is done by the `standardwebhooks` library itself, so what receivers verify with it (or
any other Standard Webhooks verifier) is exactly what was signed.
"""

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

from webhooks.models import Event, WebhookEndpoint

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix Standard Webhooks secrets carry, not a secret
SECRET_BYTES = 32
# After a rotation the replaced secret keeps signing (beside the new one) for this long.
ROTATION_OVERLAP = timedelta(hours=24)


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as the API renders times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload_body(event: Event) -> str:
    """The body every attempt of every delivery of the event sends, byte for byte."""
    return json.dumps(
        {"type": event.type, "timestamp": iso_timestamp(event.created_at), "data": event.data},
        separators=(",", ":"),
    )


def signing_secrets(endpoint: WebhookEndpoint, *, now: datetime) -> list[str]:
    """The current secret, then the one it replaced while that is still valid (rotation)."""
    found = [endpoint.secret]
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires_at is not None and expires_at > now:
        found.append(endpoint.previous_secret)
    return found


def signed_headers(*, msg_id: str, body: str, keys: list[str], now: datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (whole seconds) and `webhook-signature`, one `v1,…` per
    secret, space-separated."""
    timestamp = now.replace(microsecond=0)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(msg_id, timestamp, body) for key in keys),
    }
