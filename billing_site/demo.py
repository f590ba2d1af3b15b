"""The small demo project `make run` loads: a staff login, a project, an API key and a catalog.

The customer `cus_8fq` has exactly one metered subscription, so the example from the docs,
`POST /v1/usage {"customer": "cus_8fq", "units": 1240}`, works as written.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.models import Project, Role
from accounts.services import membership_set, project_bootstrap, project_update
from catalog.services import customer_create, plan_create, product_create
from meters.services import meter_create
from subscriptions.services import subscription_create

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - local demo only: `make run` binds to 127.0.0.1 unless HOST says otherwise
DEMO_PROJECT = "Demo"


@dataclass(frozen=True)
class Demo:
    project: Project
    api_key_secret: str | None  # None when the demo already existed: secrets are shown once


def demo_load() -> Demo:
    """Create the demo once; later runs find it and change nothing."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user is not None:
            membership = user.memberships.select_related("project").filter(role=Role.OWNER).first()
            if membership is not None:
                return Demo(project=membership.project, api_key_secret=None)
        else:
            user = User.objects.create_user(DEMO_USERNAME, email="demo@example.com", password=DEMO_PASSWORD)
        # A sandbox: close_billing_periods --as-of a future date rehearses the month-end on it.
        project, _, secret = project_bootstrap(name=DEMO_PROJECT, sandbox=True)
        membership_set(project=project, user=user, role=Role.OWNER, actor=None)
        _demo_branding(project)
        _demo_catalog(project)
    return Demo(project=project, api_key_secret=secret)


def _demo_branding(project: Project) -> None:
    """What the demo's invoice PDFs and emails show (docs/documents.md)."""
    project_update(
        project=project,
        actor=None,
        changes={
            "company_name": "Demo Cloud Inc.",
            "company_address": "1 Market Street\nSan Francisco, CA 94105\nUnited States",
            "company_tax_id": "US 12-3456789",
            "sender_name": "Demo Cloud Billing",
            "sender_email": "billing@demo-cloud.example",
            "reply_to_email": "accounts@demo-cloud.example",
            "payment_instructions": "Bank transfer to IBAN US00 DEMO 0000 0000 0000 00, "
            "reference: the invoice number.",
            "footer_text": "Demo Cloud Inc. · a demo project of Billable",
        },
    )


def _demo_catalog(project: Project) -> None:
    calls = meter_create(project=project, code="api_calls", name="API calls", unit="calls", actor=None)
    storage = meter_create(
        project=project, code="storage_gb", name="Storage", unit="GB", aggregation="max", actor=None
    )
    product = product_create(project=project, code="api", name="API platform", actor=None)
    starter = plan_create(
        project=project,
        product=product,
        code="starter",
        name="Starter",
        actor=None,
        charges=[{"meter": calls, "name": "API calls", "pricing_model": "per_unit", "unit_price": "0.002"}],
    )
    pro = plan_create(
        project=project,
        product=product,
        code="pro",
        name="Pro",
        base_fee="49",
        actor=None,
        entitlements={"sso": True, "seats": 10},
        charges=[
            {
                "meter": calls,
                "name": "API calls",
                "pricing_model": "graduated",
                "tiers": [
                    {"up_to": 10000, "unit_price": "0"},
                    {"up_to": 1000000, "unit_price": "0.001"},
                    {"up_to": None, "unit_price": "0.0005"},
                ],
            },
            {
                "meter": storage,
                "name": "Storage (peak GB)",
                "pricing_model": "package",
                "unit_price": "5",
                "package_size": "100",
            },
        ],
    )
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for external_id, name, plan in (("cus_8fq", "Initech", starter), ("acme", "Acme Corp", pro)):
        customer = customer_create(
            project=project,
            external_id=external_id,
            name=name,
            email=f"billing@{name.split()[0].lower()}.example",
            actor=None,
        )
        subscription_create(project=project, customer=customer, plan=plan, starts_at=month_start, actor=None)
