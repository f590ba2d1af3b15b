"""Seed a database for the schemathesis run (.ci/fuzz) and print its configuration.

A project with every kind of object the API serves (customers, subscriptions, invoices in each
state, a credit note, a contract, a webhook endpoint, a spare API key), made through the services
as a user would make them, so that operations with an `{id}` are fuzzed beyond 404. The TOML
printed on stdout authenticates schemathesis with a new all-scopes key and offers the seeded IDs
as dictionaries for path parameters and the references in request bodies.

Run with the app's environment (DATABASE_URL) after `manage.py migrate`:
    .venv/bin/python .ci/fuzz_seed.py > schemathesis.toml
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings")

import django

django.setup()

from datetime import timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

from django.core.files.base import ContentFile  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import ALL_SCOPES  # noqa: E402
from accounts.services import api_key_create, project_bootstrap  # noqa: E402
from catalog.coupons import coupon_create, coupon_redeem  # noqa: E402
from catalog.models import Contract, ContractLine  # noqa: E402
from catalog.services import customer_create, plan_create, product_create  # noqa: E402
from catalog.taxes import tax_rate_create  # noqa: E402
from invoicing.billing import billing_close, drafts_refresh  # noqa: E402
from invoicing.credits import credits_grant  # noqa: E402
from invoicing.models import Invoice, InvoiceStatus  # noqa: E402
from invoicing.purchases import credits_purchase  # noqa: E402
from invoicing.services import credit_note_create  # noqa: E402
from meters.services import meter_create, usage_ingest  # noqa: E402
from payments.payouts import balance_settle  # noqa: E402
from payments.services import payment_record  # noqa: E402
from subscriptions.services import subscription_create  # noqa: E402
from webhooks.services import webhook_endpoint_create  # noqa: E402

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def seed() -> dict[str, list[str]]:
    project, _, _ = project_bootstrap(name="Fuzz")
    # Thousands of requests a minute: the limit would answer 429 to most of them.
    project.api_rate_limit_per_minute = project.ingest_rate_limit_per_minute = 10**7
    project.allow_private_webhook_urls = True
    project.save()

    calls = meter_create(project=project, code="api_calls", name="API calls", actor=None)
    storage = meter_create(project=project, code="storage_gb", aggregation="max", actor=None)
    spare_meter = meter_create(project=project, code="unused", actor=None)
    product = product_create(project=project, code="api", name="API", actor=None)
    spare_product = product_create(project=project, code="spare", name="Spare", actor=None)
    starter = plan_create(
        project=project, product=product, code="starter", name="Starter", actor=None,
        charges=[{"meter": calls, "unit_price": "0.002"}],
    )  # fmt: skip
    pro = plan_create(
        project=project, product=product, code="pro", name="Pro", base_fee="49", actor=None,
        charges=[
            {"meter": calls, "pricing_model": "graduated",
             "tiers": [{"up_to": 1000, "unit_price": "0"}, {"up_to": None, "unit_price": "0.001"}]},
            {"meter": storage, "pricing_model": "package", "unit_price": "5", "package_size": "10"},
        ],
    )  # fmt: skip

    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    customers, subscriptions = [], []
    for external_id, plan, delivery in (
        ("cus_8fq", starter, "auto"),
        ("acme", pro, "review"),
        ("globex", pro, "auto"),
    ):
        customer = customer_create(
            project=project, external_id=external_id, name=external_id.title(),
            email=f"billing@{external_id.replace('_', '')}.example", invoice_delivery=delivery, actor=None,
        )  # fmt: skip
        customers.append(customer)
        subscriptions.append(
            subscription_create(
                project=project, customer=customer, plan=plan, starts_at=month_start, actor=None
            )
        )
    spare_customer = customer_create(project=project, external_id="no-subscriptions", actor=None)
    usage_ingest(
        project=project,
        events=[
            {"customer": "cus_8fq", "value": 1240},
            {"customer": "acme", "meter": "storage_gb", "value": 12},
        ],
    )
    billing_close(as_of=timezone.now(), project_id=project.pk)
    drafts_refresh(project_id=project.pk)
    open_invoice = Invoice.objects.filter(project=project, status=InvoiceStatus.OPEN).first()
    credit_notes = []
    if open_invoice is not None:
        credit_notes.append(
            credit_note_create(invoice=open_invoice, actor=None, reason="billing_error", amount="1")
        )

    # A paid invoice with a payment recorded for the project's own processor, a credit note that owes
    # part of it back (so a refund can be fuzzed), and a payout of an older payment.
    paid = (
        Invoice.objects.filter(project=project, status=InvoiceStatus.OPEN)
        .exclude(pk=getattr(open_invoice, "pk", None))
        .first()
    )
    payments = []
    if paid is not None:
        payments.append(payment_record(invoice=paid, amount=paid.amount_due, actor=None, reference="SEED-1"))
        credit_notes.append(credit_note_create(invoice=paid, actor=None, reason="duplicate", amount="1"))
    payouts = balance_settle(now=timezone.now() + timedelta(days=3)).payouts

    # Prepaid credits: a free grant (voidable) and a purchase (its invoice open, its grant unpaid).
    grants = [
        credits_grant(customer=customers[0], currency="USD", amount=Decimal(50), name="Welcome", actor=None),
        credits_grant(customer=customers[1], currency="USD", amount=Decimal(20), actor=None),
        credits_purchase(customer=customers[2], currency="USD", amount=Decimal(100), actor=None),
    ]

    contract = Contract.objects.create(
        project=project, title="Initech MSA", currency="USD", start_date=month_start.date(),
        customer_name="Initech", customer_email="ap@initech.example",
    )  # fmt: skip
    contract.document.save("msa.pdf", ContentFile(PDF))
    ContractLine.objects.create(contract=contract, kind="fixed", name="Platform", unit_price="100")
    # Several: DELETE may take one early in the run, and the others keep their routes fuzzable.
    endpoints = [
        webhook_endpoint_create(project=project, url=f"http://127.0.0.1:9/hooks/{n}", actor=None)
        for n in range(3)
    ]
    vat = tax_rate_create(
        project=project, name="VAT", percentage="20", jurisdiction="FR", is_default=True, actor=None
    )
    coupon = coupon_create(
        project=project, code="launch20", name="Launch", kind="percentage", percent_off="20",
        duration="repeating", duration_periods=3, actor=None,
    )  # fmt: skip
    redemption = coupon_redeem(customer=customers[0], coupon=coupon, actor=None)
    spare_key, _ = api_key_create(project=project, name="spare", scopes=ALL_SCOPES, actor=None)
    _, secret = api_key_create(project=project, name="schemathesis", scopes=ALL_SCOPES, actor=None)

    invoices = list(Invoice.objects.filter(project=project).values_list("public_id", flat=True))
    lines = [
        line.public_id for invoice in Invoice.objects.filter(project=project) for line in invoice.lines.all()
    ]
    return {
        "secret": secret,
        "customers": [c.public_id for c in [*customers, spare_customer]] + [c.external_id for c in customers],
        "subscriptions": [s.public_id for s in subscriptions],
        "plans": [starter.public_id, pro.public_id],
        "products": [product.public_id, spare_product.public_id],
        "meters": [calls.public_id, storage.public_id, spare_meter.public_id],
        "invoices": invoices,
        "lines": lines,
        "credit_notes": [note.public_id for note in credit_notes],
        "payments": [payment.public_id for payment in payments],
        "payouts": [payout.public_id for payout in payouts],
        "contracts": [contract.public_id],
        "credit_grants": [grant.public_id for grant in grants],
        "currencies": ["USD", "EUR", "JPY"],
        "endpoints": [endpoint.public_id for endpoint in endpoints],
        "api_keys": [spare_key.public_id],
        "tax_rates": [vat.public_id],
        "coupons": [coupon.public_id],
        "coupon_codes": [coupon.code],
        "redemptions": [redemption.public_id],
        "meter_codes": [calls.code, storage.code],
        "moments": [
            month_start.isoformat(),
            (timezone.now() - timedelta(days=1)).isoformat(),
            (timezone.now() + timedelta(days=40)).isoformat(),
        ],
    }


SETTINGS = """
# At least 100 examples per operation (the issue's bar for write operations; reads get as many).
generation.max-examples = 100
# Strings with U+0000: every text field refuses them (400 `null_characters_not_allowed` or
# `invalid_characters`, docs/api.md), which OpenAPI cannot state without a pattern on every string.
# tests/billing_site/test_hostile_input.py sends NUL to every write operation instead.
generation.allow-x00 = false

[checks.positive_data_acceptance]
# A request the schema allows may still be refused: 409 (a code already taken, an object in use),
# 413 (the body cap, API_MAX_BODY_BYTES) and 422 (it names an object that does not exist, breaks a
# rule between fields, or the object's state does not allow it): docs/api.md, "400 or 422".
# 400 is not here: a request that has the documented shape is never 400.
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429"]

[checks.negative_data_rejection]
# Schemathesis' list, plus what the server refuses before the application does: a request line over
# its limit (414: generated query strings can be long), headers too large (431), a body it cannot
# frame (411), too large (413), an Expect it does not meet (417). All are refusals in the envelope.
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "411", "413", "414", "415", "417", "422", "428",
    "429", "431",
]

[[operations]]
# A PDF download renders a draft each time (0.1-0.4 s of WeasyPrint, docs/performance.md) and its
# only input is the ID in the path, drawn from the seeded IDs: 10 examples try what 100 would.
include-path-regex = "/pdf$"
generation.max-examples = 10

[[operations]]
# DELETE on an API key revokes it: the key stops working at once and stays readable, marked
# revoked, as the audit of who could call the API when (docs/api.md), the way Stripe keeps a
# deleted customer readable. A read after the DELETE answering 200 is that, not a use after free.
include-path = "/v1/api-keys/{id}"
include-method = "GET"
checks.use_after_free.enabled = false
"""


def toml(ids: dict[str, list[str]]) -> str:
    def values(items: list[str]) -> str:
        return json.dumps(items)

    bindings = {
        r"^/v1/customers/\{id\}": "customers",
        r"^/v1/subscriptions/\{id\}": "subscriptions",
        r"^/v1/plans/\{id\}": "plans",
        r"^/v1/products/\{id\}": "products",
        r"^/v1/meters/\{id\}": "meters",
        r"^/v1/invoices/\{id\}": "invoices",
        r"^/v1/credit-notes/\{id\}": "credit_notes",
        r"^/v1/credit-grants/\{id\}": "credit_grants",
        r"^/v1/contracts/\{id\}": "contracts",
        r"^/v1/webhook-endpoints/\{id\}": "endpoints",
        r"^/v1/api-keys/\{id\}": "api_keys",
        r"^/v1/payments/\{id\}": "payments",
        r"^/v1/payouts/\{id\}": "payouts",
        r"^/v1/tax-rates/\{id\}": "tax_rates",
        r"^/v1/coupons/\{id\}": "coupons",
    }
    out = [
        "# Written by .ci/fuzz_seed.py for one run; see .ci/fuzz.",
        'headers = { Authorization = "Bearer ' + ids["secret"] + '" }',
        SETTINGS,
    ]
    for name, items in ids.items():
        if name != "secret" and items:
            out += [f"[dictionaries.{name}]", f"values = {values(items)}", ""]
    # Valid times and meter codes, most of the time: random ones are mostly refused (a year outside
    # 2000-2099, a meter that does not exist), which would leave the paths past them untried.
    everywhere = {
        "body.starts_at": "moments", "body.ends_at": "moments", "body.period_start": "moments",
        "body.since": "moments", "body.timestamp": "moments", "query.from": "moments", "query.to": "moments",
        "body.charges[*].meter": "meter_codes", "body.meter": "meter_codes",
        "path.currency": "currencies", "body.currency": "currencies",
    }  # fmt: skip
    out.append("[parameters]")
    out += [f'"{key}" = {{ dictionary = "{name}", probability = 0.7 }}' for key, name in everywhere.items()]
    out.append("")
    for regex, name in bindings.items():
        if not ids[name]:
            continue
        out += [
            "[[operations]]",
            f"include-path-regex = {json.dumps(regex)}",
            f'parameters = {{ "path.id" = {{ dictionary = "{name}", probability = 0.9 }} }}',
            "",
        ]
    body_refs = {
        "/v1/subscriptions": {"body.customer": "customers", "body.plan": "plans"},
        "/v1/plans": {"body.product": "products"},
        "/v1/invoices/preview": {"body.subscription": "subscriptions", "body.plan": "plans"},
        "/v1/coupons": {"body.plans[*]": "plans"},
    }
    for path, refs in body_refs.items():
        rendered = ", ".join(
            f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}' for key, name in refs.items()
        )
        out += [
            "[[operations]]",
            f"include-path = {json.dumps(path)}",
            'include-method = "POST"',
            f"parameters = {{ {rendered} }}",
            "",
        ]
    customer_coupons = r"^/v1/customers/\{id\}/coupons"
    # A customer's coupons: the seeded customers, the seeded coupon by code, and the redemption.
    out += [
        "[[operations]]",
        f"include-path-regex = {json.dumps(customer_coupons)}",
        'parameters = { "path.id" = { dictionary = "customers", probability = 0.9 }, '
        '"path.redemption" = { dictionary = "redemptions", probability = 0.9 }, '
        '"body.coupon" = { dictionary = "coupon_codes", probability = 0.8 }, '
        '"body.subscription" = { dictionary = "subscriptions", probability = 0.5 } }',
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(toml(seed()))
