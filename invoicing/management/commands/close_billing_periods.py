import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Project
from billing_site.errors import Unprocessable
from billing_site.progress import ProgressLine
from invoicing.billing import billing_close, future_close_check, subscriptions_due


class Command(BaseCommand):
    help = (
        "Bill every period that ended before --as-of (default now) minus the project's grace period: "
        "rate it, then issue the invoice or hold it for review, and move the subscription on. Also "
        "issues the opening invoice of subscriptions that have started. Safe to run twice, "
        "concurrently, and after a crash."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of",
            help="ISO 8601 time, default now (e.g. 2026-12-01T00:00:00Z). A future time is refused, "
            "except for sandbox projects (a rehearsal).",
        )
        parser.add_argument("--project", help="Only this project (its ID, proj_…).")
        parser.add_argument("--dry-run", action="store_true", help="List what is due; change nothing.")

    def handle(self, *args, as_of, project, dry_run, **options):
        moment = timezone.now()
        if as_of:
            moment = parse_datetime(as_of)
            if moment is None or moment.tzinfo is None:
                raise CommandError(
                    "--as-of must be an ISO 8601 time with an offset, e.g. 2026-12-01T00:00:00Z"
                )
        project_id = None
        if project:
            project_id = Project.objects.filter(public_id=project).values_list("pk", flat=True).first()
            if project_id is None:
                raise CommandError(f"No project {project!r}.")
        try:
            future_close_check(as_of=moment, project_id=project_id)
        except Unprocessable as error:
            raise CommandError(error.message) from None
        due = subscriptions_due(as_of=moment, project_id=project_id)
        progress = ProgressLine(self.stdout, len(due))
        run = billing_close(as_of=moment, project_id=project_id, progress=progress, dry_run=dry_run)
        progress.close()
        if dry_run:
            self.stdout.write(
                f"{run.subscriptions} subscription(s) have periods due as of {moment.isoformat()} (dry run)."
            )
            return
        closed = run.closed
        self.stdout.write(
            f"periods closed {closed.periods_closed}, opening invoices {closed.opened}: finalized "
            f"{closed.finalized}, queued for review {closed.queued_for_review}; skipped {run.skipped}; "
            f"failed {len(run.failed)}"
        )
        for subscription, reason in run.failed.items():
            self.stderr.write(f"  {subscription}: {reason}")
        if run.failed:
            sys.exit(1)
