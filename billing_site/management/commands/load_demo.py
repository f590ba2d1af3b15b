from django.conf import settings
from django.core.management.base import BaseCommand

from billing_site.demo import DEMO_PASSWORD, DEMO_USERNAME, demo_load


class Command(BaseCommand):
    help = "Load the demo project (idempotent) and print how to log in and call the API."

    def handle(self, *args, **options):
        demo = demo_load()
        base = f"http://{settings.HOST}:{settings.PORT}"
        lines = [
            "",
            f"Demo project: {demo.project.name} ({demo.project.public_id})",
            f"  Admin:    {base}/admin/   user: {DEMO_USERNAME}   password: {DEMO_PASSWORD}",
            f"  API docs: {base}/docs/    schema: {base}/v1/openapi.json",
        ]
        if demo.api_key_secret:
            auth = f"-H 'Authorization: Bearer {demo.api_key_secret}'"
            lines += [
                f"  API key:  {demo.api_key_secret}   (shown once: copy it now)",
                f"  Try:      curl {auth} {base}/v1/customers/cus_8fq/items",
                f"            curl {auth} -H 'Content-Type: application/json' "
                f"""-d '{{"customer": "cus_8fq", "units": 1240}}' {base}/v1/usage""",
            ]
        else:
            lines.append(
                "  API key:  printed when the demo was first created; make another in the admin (API keys)."
            )
        lines.append("")
        self.stdout.write("\n".join(lines))
