from django.core.management.base import BaseCommand
from django.utils import timezone

from billing_site.progress import ProgressLine
from webhooks import selectors, services


class Command(BaseCommand):
    help = (
        "Disable endpoints failing for 5 days and probe failing ones, then send the webhook "
        "deliveries that are due: retries, probes, and first attempts whose task was lost. "
        "Safe to run in several processes at once and after a crash: each attempt is claimed first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what is due; send, disable and probe nothing."
        )
        parser.add_argument(
            "--limit", type=int, default=selectors.DUE_LIMIT, help="At most this many deliveries."
        )
        parser.add_argument(
            "--max-seconds", type=float, default=None, help="Take no new delivery after this long."
        )

    def handle(self, *args, dry_run: bool, limit: int, max_seconds: float | None, **options):
        if dry_run:
            due = selectors.webhook_deliveries_due(now=timezone.now(), limit=limit)
            self.stdout.write(f"{len(due)} deliveries due; nothing sent (dry run).")
            return
        # As the scheduled task does (webhooks.tasks.deliver_due_webhooks says why): the check first,
        # so its probes are among what is due.
        check = services.webhook_failing_endpoints_check()
        due = selectors.webhook_deliveries_due(now=timezone.now(), limit=limit)
        progress = ProgressLine(self.stdout, len(due))
        run = services.webhook_deliveries_send(delivery_ids=due, max_seconds=max_seconds, progress=progress)
        progress.close()
        self.stdout.write(
            f"attempted {run.attempted}: succeeded {run.succeeded}, rescheduled {run.rescheduled}, "
            f"failed {run.failed}; cancelled {run.cancelled} (endpoint disabled), "
            f"skipped {run.skipped} (taken by another worker), errors {run.errors} (see the log), "
            f"left {run.left} (time budget); failing endpoints: disabled {check.disabled}, "
            f"probed {check.probed}"
        )
