from django.core.management.base import BaseCommand
from django.utils import timezone

from billing_site.progress import ProgressLine
from webhooks import selectors, services


class Command(BaseCommand):
    help = (
        "Send the webhook deliveries that are due: retries, and first attempts whose task was lost. "
        "Safe to run in several processes at once and after a crash: each attempt is claimed first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what is due; send nothing.")
        parser.add_argument(
            "--limit", type=int, default=selectors.DUE_LIMIT, help="At most this many deliveries."
        )
        parser.add_argument(
            "--max-seconds", type=float, default=None, help="Take no new delivery after this long."
        )

    def handle(self, *args, dry_run: bool, limit: int, max_seconds: float | None, **options):
        due = selectors.webhook_deliveries_due(now=timezone.now(), limit=limit)
        if dry_run:
            self.stdout.write(f"{len(due)} deliveries due; nothing sent (dry run).")
            return
        progress = ProgressLine(self.stdout, len(due))
        run = services.webhook_deliveries_send(delivery_ids=due, max_seconds=max_seconds, progress=progress)
        progress.close()
        self.stdout.write(
            f"attempted {run.attempted}: succeeded {run.succeeded}, rescheduled {run.rescheduled}, "
            f"failed {run.failed}; cancelled {run.cancelled} (endpoint disabled), "
            f"skipped {run.skipped} (taken by another worker), errors {run.errors} (see the log), "
            f"left {run.left} (time budget)"
        )
