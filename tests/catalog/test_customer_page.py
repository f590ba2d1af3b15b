"""The customer's page: billing details as fields, saved through the services; below the form,
read-only, what the customer is billed."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from catalog.admin.customers import CustomerPage
from catalog.models import Customer
from invoicing.services import credit_note_create
from meters.services import usage_ingest
from payments.models import PaymentMethod
from payments.services import payment_record
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.invoicing.factories import issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ADDRESS = {"line1": "1 Infinite Loop", "city": "Springfield", "postal_code": "12345", "country": "US"}


@pytest.fixture(autouse=True)
def _frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def _form(customer, **changes):
    address = {f"address_{part}": value for part, value in (customer.billing_address or {}).items()}
    data = {
        "project": customer.project_id, "external_id": customer.external_id, "name": customer.name,
        "email": customer.email, "currency": customer.currency, "timezone": customer.timezone, "locale": "",
        "tax_id": "", "tax_status": "taxable", "invoice_delivery": "", "processor_customer_id": "",
        "invoice_emails": "", "invoice_cc": "", "metadata": "", **address,
    }  # fmt: skip
    data.update(changes)
    return data


def _url(customer):
    return reverse("admin:catalog_customer_change", args=[customer.pk])


def test_the_billing_address_is_saved_from_its_fields_through_the_service(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project, name="Initech")
    fields = {f"address_{part}": value for part, value in ADDRESS.items()}

    response = client.post(_url(customer), _form(customer, **fields, address_line2=""))

    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.billing_address == ADDRESS
    entry = AuditLogEntry.objects.get(action="customer.updated")
    assert (entry.actor_label, entry.changes) == (user.username, {"billing_address": ["{}", str(ADDRESS)]})
    assert Event.objects.filter(type="customer.updated").count() == 1
    page = client.get(_url(customer)).content.decode()
    assert 'name="address_city" value="Springfield"' in page
    assert '<option value="US" selected>United States (US)</option>' in page
    assert 'name="billing_address"' not in page


def test_a_customer_is_created_with_an_address_and_metadata(client, project):
    _login(client, project, Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:catalog_customer_add"),
        {
            "project": project.pk, "external_id": "globex", "name": "Globex", "email": "ap@globex.example",
            "currency": "USD", "timezone": "UTC", "tax_status": "taxable", "metadata": "crm_id = G-7",
            "address_city": "Cypress Creek", "address_country": "US",
        },
    )  # fmt: skip

    assert response.status_code == 302
    created = AuditLogEntry.objects.get(action="customer.created")
    customer = Customer.objects.get(public_id=created.object_id)
    assert (customer.billing_address, customer.metadata) == (
        {"city": "Cypress Creek", "country": "US"},
        {"crm_id": "G-7"},
    )


def test_an_unknown_country_is_refused_on_its_field_and_nothing_is_saved(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project)

    response = client.post(_url(customer), _form(customer, address_city="Paris", address_country="XX"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["address_country"] == ["Select a valid choice. XX is not one of the available choices."]
    customer.refresh_from_db()
    assert customer.billing_address == {}
    assert not AuditLogEntry.objects.filter(action="customer.updated").exists()


def test_metadata_is_typed_as_key_value_lines_and_read_back_the_same(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project)

    client.post(_url(customer), _form(customer, metadata="crm_id = A-1042\n\n  tier=gold  \nnote = a = b"))

    customer.refresh_from_db()
    assert customer.metadata == {"crm_id": "A-1042", "tier": "gold", "note": "a = b"}
    page = client.get(_url(customer)).content.decode()
    assert ">\ncrm_id = A-1042\nnote = a = b\ntier = gold</textarea>" in page
    assert "{}" not in page


@pytest.mark.parametrize(
    "metadata",
    [
        {"a=b": "c"},  # an = in a key
        {"note": "x\ny = z"},  # a line break in a value
        {"pad": "  v  "},  # spaces around a value
        {"note": "line 1\nline 2", "crm_id": "A-1"},
    ],
)
def test_metadata_lines_cannot_write_is_shown_and_kept_as_json(client, project, metadata):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project, name="Customer", metadata=metadata)
    form = client.get(_url(customer)).context["adminform"].form

    shown = form["metadata"].value()
    shown = form.fields["metadata"].prepare_value(shown)
    response = client.post(_url(customer), _form(customer, name="Renamed", metadata=shown))

    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.name, customer.metadata) == ("Renamed", metadata)
    assert shown.startswith("{")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("crm_id = A-1042\ncrm_id A-1043", "Line 2: write 'key = value'."),
        ("crm_id = A\ncrm_id = B", "Line 2: 'crm_id' is already given."),
        (f"{'k' * 41} = v", f"'{'k' * 41}': a key has 1 to 40 characters."),
        (f"k = {'v' * 501}", "'k': a value has at most 500 characters."),
        ('{"k": 1}', "A JSON object of text values."),
        ('{"k": ', "Not a JSON object."),
        ("\n".join(f"k{n} = v" for n in range(51)), "At most 50 keys."),
    ],
)
def test_a_bad_metadata_line_is_shown_on_the_field_and_nothing_is_saved(client, project, metadata, message):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project, name="Customer", metadata={"crm_id": "A-1"})

    response = client.post(_url(customer), _form(customer, name="Renamed", metadata=metadata))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["metadata"] == [message]
    customer.refresh_from_db()
    assert (customer.name, customer.metadata) == ("Customer", {"crm_id": "A-1"})
    assert not AuditLogEntry.objects.filter(action="customer.updated").exists()


@pytest.fixture
def billed_customer(project):
    """Subscribed since January 1 to a metered plan, with an issued invoice of $250.00 (credited
    $50.00, paid $100.00 by bank transfer) and a saved card."""
    customer = CustomerFactory(
        project=project,
        name="Initech",
        external_id="initech",
        billing_address=ADDRESS,
        metadata={"crm_id": "A-1"},
    )
    meter = MeterFactory(project=project, code="api_calls", name="API calls", unit="calls")
    plan = make_plan(project, name="Metered", charges=[{"meter": meter, "unit_price": "0.01"}])
    subscribe(customer, plan, starts_at=datetime(2026, 1, 1, tzinfo=UTC))
    usage_ingest(
        project=project,
        events=[
            {
                "customer": "initech",
                "meter": "api_calls",
                "value": 1234.5,
                "timestamp": "2026-01-02T00:00:00Z",
            }
        ],
    )
    invoice = issued_invoice(project, total="250.00", customer=customer)
    credit_note_create(invoice=invoice, actor=None, reason="duplicate", amount=Decimal("50.00"))
    payment_record(invoice=invoice, amount=Decimal("100.00"), actor=None, reference="wire-1")
    PaymentMethod.objects.create(
        project=project, customer=customer, processor_id="pm_1", type="card", brand="visa", last4="4242",
        exp_month=3, exp_year=2034, is_default=True,
    )  # fmt: skip
    return customer


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start : page.index("</div>", start)]


def test_the_page_shows_what_the_customer_is_billed(client, project, billed_customer):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = billed_customer.invoices.get()
    payment = invoice.payments.get()
    note = invoice.credit_notes.get()

    page = client.get(_url(billed_customer)).content.decode()

    subscriptions = _section(page, "Subscriptions")
    assert subscriptions.count("<tr>") == 3  # the header and two subscriptions
    assert "<td>Active</td><td>Jan 1\u2009–\u200931, 2026</td><td>Jan 1, 2026</td><td>-</td>" in subscriptions
    assert f"?customer__id__exact={billed_customer.pk}" in subscriptions
    invoices = _section(page, "Invoices")
    assert (
        f'<td><a href="/admin/invoicing/invoice/{invoice.pk}/change/">{invoice.number}</a></td><td>Open</td>'
        "<td>Jan 15\u2009–\u200931, 2026</td><td>$250.00</td><td>$100.00</td>"  # the days its lines bill
    ) in invoices
    assert (
        f'href="/admin/invoicing/invoice/?customer={billed_customer.public_id}">All invoices of this customer'
        in (invoices)
    )
    assert (
        f'<td><a href="/admin/invoicing/creditnote/{note.pk}/change/">{note.number}</a></td>'
        f'<td><a href="/admin/invoicing/invoice/{invoice.pk}/change/">{invoice.number}</a></td>'
        "<td>$50.00</td><td>Jan 15, 2026</td>"
    ) in _section(page, "Credit notes")
    assert (
        f'<td><a href="/admin/payments/payment/{payment.pk}/change/">{payment.public_id}</a></td>'
        f'<td><a href="/admin/invoicing/invoice/{invoice.pk}/change/">{invoice.number}</a></td>'
        "<td>Succeeded</td><td>$100.00</td><td>bank_transfer</td><td>Jan 15, 2026</td>"
    ) in _section(page, "Payments")
    assert "visa •••• 4242</a></td><td>card</td><td>03/2034</td><td>default</td><td></td>" in _section(
        page, "Payment methods"
    )
    assert "API calls</strong> (api_calls, sum):\n          1,234.5 calls" in _section(
        page, "Usage this period"
    )
    assert "Apply a coupon…" in page


def test_each_section_is_one_query_whatever_its_rows(project, billed_customer, django_assert_num_queries):
    for _ in range(3):
        invoice = issued_invoice(project, total="10.00", customer=billed_customer)
        credit_note_create(invoice=invoice, actor=None, reason="duplicate", amount=Decimal("1.00"))
        payment_record(invoice=invoice, amount=Decimal("2.00"), actor=None)
    customer = Customer.objects.select_related("project").get(pk=billed_customer.pk)

    with django_assert_num_queries(5):
        sections = CustomerPage(customer).sections()

    assert [len(section.rows) for section in sections] == [5, 4, 4, 4, 1]


def test_a_viewer_reads_the_page_and_another_project_does_not_see_it(
    client, project, other_project, billed_customer
):
    _login(client, project, Role.VIEWER)

    page = client.get(_url(billed_customer)).content.decode()

    assert 'name="address_city"' not in page
    assert "<div>1 Infinite Loop</div><div>12345 Springfield</div><div>US</div>" in page
    assert "<div>crm_id = A-1</div>" in page
    assert "$250.00" in page
    assert "Apply a coupon…" not in page
    _login(client, other_project, Role.OWNER)
    hidden = client.get(_url(billed_customer), follow=True)
    assert "Initech" not in hidden.content.decode()
