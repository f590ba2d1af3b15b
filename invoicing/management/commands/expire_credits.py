from django.core.management.base import BaseCommand
from django.utils import timezone

from billing_site.progress import ProgressLine
from invoicing.credits import credits_expire, credits_expiring_count


class Command(BaseCommand):
    help = (
        "Write off what is left of prepaid credits past their expiry. Safe to run twice or "
        "concurrently: each expiry is entered once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would expire; change nothing.")

    def handle(self, *args, dry_run, **options):
        now = timezone.now()
        if dry_run:
            run = credits_expire(now=now, dry_run=True)
            self.stdout.write(f"{run.grants} grant(s) would expire: {run.amounts_text()} (dry run).")
            return
        progress = ProgressLine(self.stdout, credits_expiring_count(now=now))
        run = credits_expire(now=now, progress=progress)
        progress.close()
        self.stdout.write(f"expired {run.expired} grant(s): {run.amounts_text()}")
