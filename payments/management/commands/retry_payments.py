from django.core.management.base import BaseCommand
from django.utils import timezone

from billing_site.progress import ProgressLine
from payments.collection import payments_due, payments_retry


class Command(BaseCommand):
    help = (
        "Dunning: charge again the failed payments whose retry is due (the project's payment_retry_days), "
        "and the pending ones whose task was lost. Safe to run twice, concurrently, and after a crash: "
        "an attempt is made once and Stripe is asked with the same idempotency key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what is due; charge nothing.")

    def handle(self, *args, dry_run, **options):
        now = timezone.now()
        lost, retries = payments_due(now=now)
        if dry_run:
            self.stdout.write(f"{len(retries)} retries due, {len(lost)} pending charges to resume (dry run).")
            return
        progress = ProgressLine(self.stdout, len(lost) + len(retries))
        summary = payments_retry(now=now, progress=progress)
        progress.close()
        self.stdout.write(
            f"retried {summary.retried}, resumed {summary.recovered}: succeeded {summary.succeeded}, "
            f"failed {summary.failed}"
        )
