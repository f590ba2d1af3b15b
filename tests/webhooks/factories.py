from django.db import transaction

from accounts.models import Project
from webhooks.models import Event, WebhookEndpoint
from webhooks.services import event_record, webhook_endpoint_create

# A public address given as a literal, so creating the endpoint needs no DNS (nothing is sent to it).
PUBLIC_URL = "https://93.184.215.14/webhooks"


def make_endpoint(project: Project, url: str = PUBLIC_URL, **fields) -> WebhookEndpoint:
    """An endpoint through the real service (URL rule, secret)."""
    return webhook_endpoint_create(project=project, url=url, actor=None, **fields)


def record_event(project: Project, type_: str = "customer.created", data: dict | None = None) -> Event:
    """An event recorded as every service records one: inside a transaction, fanned out to endpoints."""
    with transaction.atomic():
        return event_record(project=project, type=type_, data=data if data is not None else {"id": "cus_1"})
