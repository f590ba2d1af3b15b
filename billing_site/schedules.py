"""The recurring jobs django-q2 runs. `manage.py serve` writes them to the schedule table on start,
so changing a line here changes the running schedule at the next start."""

from dataclasses import dataclass

from django.db import transaction
from django_q.models import Schedule


@dataclass(frozen=True)
class Job:
    name: str
    func: str
    minutes: int


JOBS = [
    Job("purge idempotency keys", "billing_site.tasks.purge_idempotency_keys", 60),
    # Also disables endpoints failing for 5 days and probes failing ones: one job, not two, so a
    # probe is sent by the run that brings it forward (webhooks.tasks.deliver_due_webhooks).
    Job("deliver webhooks", "webhooks.tasks.deliver_due_webhooks", 1),
    Job("close billing periods", "invoicing.tasks.close_billing_periods", 15),
    Job("refresh draft invoices", "invoicing.tasks.refresh_draft_invoices", 15),
    Job("rematch unmatched usage", "meters.tasks.rematch_all_usage", 1),
    Job("send invoice emails", "invoicing.tasks.send_due_invoice_emails", 1),
    Job("retry payments", "payments.tasks.retry_payments", 15),
    Job("settle balance", "payments.tasks.settle_balance", 15),
    Job("expire credits", "invoicing.tasks.expire_credits", 15),
]


def ensure_schedules() -> None:
    with transaction.atomic():
        for job in JOBS:
            Schedule.objects.update_or_create(
                name=job.name,
                defaults={
                    "func": job.func,
                    "schedule_type": Schedule.MINUTES,
                    "minutes": job.minutes,
                    "repeats": -1,
                },
            )
        Schedule.objects.exclude(name__in=[job.name for job in JOBS]).delete()
