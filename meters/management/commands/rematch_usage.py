from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Project
from meters.selectors import projects_with_unmatched_usage
from meters.services import RematchResult, usage_rematch


class Command(BaseCommand):
    help = (
        "Match unmatched usage events again (their customer, meter or subscription may exist now). "
        "Safe to run at any time and concurrently: the minutely job does the same."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Only this project (proj_…).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would match; change nothing.")

    def handle(self, *args, project: str | None, dry_run: bool, **options):
        if project is not None and not Project.objects.filter(public_id=project).exists():
            raise CommandError(f"No project {project}.")
        projects = [p for p in projects_with_unmatched_usage() if project in (None, p.public_id)]
        total = RematchResult()
        # A dry run does the work in one transaction and rolls it back.
        with transaction.atomic() if dry_run else nullcontext():
            for position, one in enumerate(projects, start=1):
                result = usage_rematch(project=one)
                total.add(result)
                if self.stdout.isatty():
                    self.stdout.write(
                        f"\r[{position}/{len(projects)}] {one.public_id}: {result.examined:,} examined, "
                        f"{result.matched:,} matched",
                        ending="\n" if position == len(projects) else "",
                    )
            if dry_run:
                transaction.set_rollback(True)
        still = (
            ", ".join(f"{reason} {count:,}" for reason, count in sorted(total.by_reason.items())) or "none"
        )
        self.stdout.write(
            f"{'Would rematch' if dry_run else 'Rematched'} usage in {len(projects):,} project(s): "
            f"{total.examined:,} events examined, {total.matched:,} matched, "
            f"{total.changed:,} with a new reason; still unmatched: {still}."
        )
