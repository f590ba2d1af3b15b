import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import Project
from billing_site.progress import ProgressLine
from payments.payouts import balance_settle, projects_with_available


class Command(BaseCommand):
    help = (
        "Pay out what is available in each project's balance (money is available the payout delay after "
        "it was paid, 48 h by default). One payout per project and currency. Safe to run twice, "
        "concurrently, and after a crash."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Only this project (its ID, proj_…).")
        parser.add_argument("--dry-run", action="store_true", help="Count the projects; pay out nothing.")

    def handle(self, *args, project, dry_run, **options):
        now = timezone.now()
        project_id = None
        if project:
            project_id = Project.objects.filter(public_id=project).values_list("pk", flat=True).first()
            if project_id is None:
                raise CommandError(f"No project {project!r}.")
        due = [pk for pk in projects_with_available(now=now) if project_id in (None, pk)]
        if dry_run:
            self.stdout.write(f"{len(due)} project(s) have money available to pay out (dry run).")
            return
        progress = ProgressLine(self.stdout, len(due))
        summary = balance_settle(now=now, project_id=project_id, progress=progress)
        progress.close()
        self.stdout.write(f"payouts created {len(summary.payouts)}; failed {len(summary.failed)}")
        for where, reason in summary.failed.items():
            self.stderr.write(f"  {where}: {reason}")
        if summary.failed:
            sys.exit(1)
