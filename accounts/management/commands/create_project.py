import json

from django.core.management.base import BaseCommand, CommandError

from accounts.services import project_bootstrap
from billing_site.errors import DomainError


class Command(BaseCommand):
    help = 'Create a project with an all-scopes API key; prints {"project": ID, "api_key": SECRET} as JSON.'

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--currency", default="USD")
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument(
            "--sandbox",
            action="store_true",
            help="A test project: its billing periods may be closed ahead of the clock.",
        )

    def handle(self, *args, name: str, currency: str, timezone: str, sandbox: bool, **options):
        try:
            project, _, secret = project_bootstrap(
                name=name, currency=currency, timezone_name=timezone, sandbox=sandbox
            )
        except DomainError as exc:
            raise CommandError(f"{exc.param}: {exc.message}") from None
        self.stdout.write(json.dumps({"project": project.public_id, "api_key": secret}))
