"""Idempotency-Key for POST and PATCH (DESIGN §4): claim, then complete or release.

A key is claimed by inserting its row, committed at once, before the request runs; the unique
constraint on (project, key) makes a concurrent second claim fail, and that request answers 409.
The response is stored in the same transaction as the request's own writes, so a crash leaves
either both or neither. A claim left "in flight" by a crashed process can be taken over after
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS.
"""

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.models import Project
from billing_site.models import IdempotencyRecord

# Responses worth replaying: the request ran. Validation, auth, 404, 413, 429 and 5xx responses
# changed nothing, so their key is released and the client may retry it with a corrected body.
STORED_STATUSES = frozenset({409, 422})


@dataclass(frozen=True)
class Claim:
    outcome: str  # "claimed", "replay", "reused" or "in_use"
    record: IdempotencyRecord | None = None


def request_fingerprint(request: HttpRequest) -> str:
    body = request.body
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: compare the bytes as sent
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.get_full_path()}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def idempotency_claim(*, project: Project, key: str, fingerprint: str) -> Claim:
    for _ in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    project=project, key=key, fingerprint=fingerprint, locked_at=now
                )
            return Claim("claimed", record)
        except IntegrityError:
            pass
        record = IdempotencyRecord.objects.filter(project=project, key=key).first()
        if record is None:
            continue  # released between our insert and our read: try to claim it again
        if record.fingerprint != fingerprint:
            return Claim("reused", record)
        if record.status == IdempotencyRecord.Status.DONE:
            return Claim("replay", record)
        stale = now - timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS)
        if record.locked_at < stale:
            taken = IdempotencyRecord.objects.filter(
                pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT, locked_at=record.locked_at
            ).update(locked_at=now)
            if taken:
                return Claim("claimed", record)
        return Claim("in_use", record)
    return Claim("in_use")


REDACTED = "[shown once, in the first response]"


def idempotency_complete(
    *, record: IdempotencyRecord, response: HttpResponse, redact: tuple[str, ...] = ()
) -> None:
    """Store the response for replay. Top-level fields named in `redact` (secrets shown once,
    such as a new API key) are stored, and so replayed, as REDACTED: a secret must not sit in
    this table for a day when everywhere else only its hash is kept."""
    body = bytes(response.content)
    if redact:
        data = json.loads(body)
        for name in redact:
            if name in data:
                data[name] = REDACTED
        body = json.dumps(data).encode()
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyRecord.Status.DONE,
        response_status=response.status_code,
        response_content_type=response.get("Content-Type", ""),
        response_body=body,
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT).delete()


def idempotency_replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(
        bytes(record.response_body or b""),
        status=record.response_status,
        content_type=record.response_content_type,
    )
    response["Idempotent-Replayed"] = "true"
    return response


def idempotency_purge_expired() -> int:
    """Delete stored responses older than IDEMPOTENCY_KEY_TTL_HOURS (scheduled daily)."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
