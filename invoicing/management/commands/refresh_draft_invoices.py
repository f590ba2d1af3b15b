import sys

from django.core.management.base import BaseCommand, CommandError
from django.db.models import F

from accounts.models import Project
from billing_site.progress import ProgressLine
from invoicing.billing import drafts_refresh
from subscriptions.models import Subscription


class Command(BaseCommand):
    help = "Create or recompute the draft (upcoming) invoice of every running subscription's current period."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Only this project (its ID, proj_…).")
        parser.add_argument("--dry-run", action="store_true", help="Count the subscriptions; change nothing.")

    def handle(self, *args, project, dry_run, **options):
        running = Subscription.objects.filter(current_period_start__lt=F("current_period_end"))
        project_id = None
        if project:
            project_id = Project.objects.filter(public_id=project).values_list("pk", flat=True).first()
            if project_id is None:
                raise CommandError(f"No project {project!r}.")
            running = running.filter(project_id=project_id)
        if dry_run:
            self.stdout.write(f"{running.count()} running subscription(s) would be refreshed (dry run).")
            return
        progress = ProgressLine(self.stdout, running.count())
        run = drafts_refresh(project_id=project_id, progress=progress)
        progress.close()
        self.stdout.write(
            f"refreshed {run.subscriptions - run.skipped - len(run.failed)}; skipped {run.skipped}; "
            f"failed {len(run.failed)}"
        )
        for subscription, reason in run.failed.items():
            self.stderr.write(f"  {subscription}: {reason}")
        if run.failed:
            sys.exit(1)
