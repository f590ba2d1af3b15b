from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import Role
from billing_site.errors import InvalidInput, InvalidState, Unprocessable
from catalog.models import Contract, ContractLine, ContractStatus, Customer, Plan
from catalog.services import contract_accept
from subscriptions.models import Subscription
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import ContractFactory, CustomerFactory, MeterFactory
from webhooks.models import Event

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def contract(project):
    meter = MeterFactory(project=project, code="invoices_ocr", name="Invoices processed")
    contract = ContractFactory(
        project=project, title="Initech MSA", customer_name="Initech", customer_email="ap@initech.example",
        customer_external_id="initech", start_date=datetime(2026, 2, 1, tzinfo=UTC).date(), payment_terms_days=45,
    )  # fmt: skip
    ContractLine.objects.create(
        contract=contract, kind="fixed", name="Platform fee", unit_price=Decimal(500), timing="in_advance"
    )
    ContractLine.objects.create(
        contract=contract, position=1, meter=meter, name="OCR", pricing_model="graduated",
        tiers=[{"up_to": "1000", "unit_price": "0.10", "flat_fee": "0"}, {"up_to": None, "unit_price": "0.05", "flat_fee": "0"}],
    )  # fmt: skip
    return contract


def _counts():
    return (
        Customer.objects.count(),
        Plan.objects.count(),
        Subscription.objects.count(),
        Event.objects.count(),
    )


def test_accepting_creates_exactly_one_customer_plan_and_subscription(contract):
    accepted = contract_accept(contract=contract, actor=None)

    customer, plan, subscription = Customer.objects.get(), Plan.objects.get(), Subscription.objects.get()
    assert (accepted.status, accepted.customer, accepted.plan, accepted.subscription) == (
        ContractStatus.ACCEPTED, customer, plan, subscription,
    )  # fmt: skip
    assert (customer.external_id, customer.name, customer.email) == (
        "initech",
        "Initech",
        "ap@initech.example",
    )
    assert (plan.is_private, plan.code, plan.name, plan.currency) == (
        True,
        f"contract.{contract.public_id}",
        "Initech MSA",
        "USD",
    )
    assert [(c.kind, c.name, c.unit_price, c.timing) for c in plan.charges.all()] == [
        ("fixed", "Platform fee", Decimal(500), "in_advance"),
        ("usage", "OCR", Decimal(0), "in_arrears"),
    ]
    assert plan.charges.all()[1].tiers == [
        {"up_to": "1000", "unit_price": "0.1", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.05", "flat_fee": "0"},
    ]
    assert (subscription.customer, subscription.plan, subscription.starts_at) == (
        customer,
        plan,
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert (subscription.payment_terms_days, subscription.external_reference) == (45, contract.public_id)
    assert list(Event.objects.order_by("id").values_list("type", flat=True)) == [
        "customer.created", "subscription.created", "contract.accepted",
    ]  # fmt: skip


def test_an_existing_customer_is_linked_not_duplicated(contract, project):
    existing = CustomerFactory(project=project, timezone="Asia/Tokyo")
    contract.customer = existing
    contract.save()

    contract_accept(contract=contract, actor=None)

    assert Customer.objects.get() == existing
    assert Subscription.objects.get().starts_at == datetime(2026, 1, 31, 15, tzinfo=UTC)  # midnight in Tokyo


def test_a_failure_midway_leaves_nothing_made(contract, project):
    contract.customer = CustomerFactory(project=project, currency="EUR")  # the contract is in USD
    contract.save()
    before = _counts()

    with pytest.raises(Unprocessable) as failure:
        contract_accept(contract=contract, actor=None)

    assert failure.value.code == "currency_mismatch"
    assert _counts() == before
    contract.refresh_from_db()
    assert (contract.status, contract.plan, contract.subscription) == (ContractStatus.DRAFT, None, None)


def test_a_contract_without_lines_is_refused(project):
    contract = ContractFactory(project=project)

    with pytest.raises(InvalidInput, match="at least one line"):
        contract_accept(contract=contract, actor=None)

    assert _counts() == (0, 0, 0, 0)


def test_accepting_twice_is_refused(contract):
    contract_accept(contract=contract, actor=None)

    with pytest.raises(InvalidState) as again:
        contract_accept(contract=contract, actor=None)

    assert again.value.code == "contract_already_accepted"
    assert Subscription.objects.count() == 1


def test_the_api_reads_contracts(api, contract):
    contract_accept(contract=contract, actor=None)

    body = api.get(f"/v1/contracts/{contract.public_id}").json()

    assert (body["status"], body["customer"], body["subscription"]) == (
        "accepted", Customer.objects.get().public_id, Subscription.objects.get().public_id,
    )  # fmt: skip
    assert [line["name"] for line in body["lines"]] == ["Platform fee", "OCR"]
    assert api.post("/v1/contracts", {}, format="json").status_code == 405


# --- admin ------------------------------------------------------------------------------------------


def _staff(client, project, role):
    membership = MembershipFactory(project=project, role=role)
    client.force_login(membership.user)
    return membership.user


def _contract_form(project, document, **changes):
    data = {
        "project": project.pk, "title": "Globex MSA", "document": document, "customer_name": "Globex",
        "currency": "USD", "interval": "month", "interval_count": 1, "billing_anchor": "calendar",
        "start_date": "2026-03-01", "payment_terms_days": 30,
        "lines-TOTAL_FORMS": "1", "lines-INITIAL_FORMS": "0",
        "lines-0-kind": "fixed", "lines-0-name": "Retainer", "lines-0-pricing_model": "per_unit",
        "lines-0-unit_price": "1000", "lines-0-timing": "in_advance", "lines-0-package_rounding": "up",
        "lines-0-free_units": "0", "lines-0-minimum_amount": "0", "lines-0-position": "0",
    }  # fmt: skip
    data.update(changes)
    return data


def test_ops_upload_and_accept_in_the_admin(client, project):
    user = _staff(client, project, Role.BILLING_ADMIN)

    created = client.post(
        reverse("admin:catalog_contract_add"), _contract_form(project, SimpleUploadedFile("msa.pdf", PDF))
    )
    contract = Contract.objects.get()
    client.post(
        reverse("admin:catalog_contract_changelist"), {"action": "accept", "_selected_action": [contract.pk]}
    )

    assert created.status_code == 302
    contract.refresh_from_db()
    assert (contract.status, contract.accepted_by) == (ContractStatus.ACCEPTED, user)
    assert contract.plan.charges.get().unit_price == Decimal(1000)
    download = client.get(reverse("admin:catalog_contract_document", args=[contract.pk]))
    assert (download.status_code, b"".join(download.streaming_content)) == (200, PDF)
    locked = client.post(
        reverse("admin:catalog_contract_change", args=[contract.pk]), _contract_form(project, "")
    )
    assert locked.status_code == 403


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (SimpleUploadedFile("msa.pdf", b"PK\x03\x04 not a pdf"), b"The document must be a PDF."),
        (SimpleUploadedFile("msa.docx", PDF), b"File extension"),
    ],
)
def test_only_pdfs_are_accepted(client, project, upload, message):
    _staff(client, project, Role.BILLING_ADMIN)

    response = client.post(reverse("admin:catalog_contract_add"), _contract_form(project, upload))

    assert response.status_code == 200
    assert message in response.content
    assert not Contract.objects.exists()


def test_oversized_documents_are_refused(client, project, monkeypatch):
    monkeypatch.setattr("catalog.forms.MAX_CONTRACT_BYTES", 10)
    _staff(client, project, Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:catalog_contract_add"), _contract_form(project, SimpleUploadedFile("a.pdf", PDF))
    )

    assert b"larger than" in response.content
    assert not Contract.objects.exists()


def test_line_pricing_is_validated_like_the_api(client, project):
    _staff(client, project, Role.BILLING_ADMIN)
    MeterFactory(project=project, code="ocr")
    form = _contract_form(
        project, SimpleUploadedFile("msa.pdf", PDF),
        **{"lines-0-kind": "usage", "lines-0-meter": "", "lines-0-pricing_model": "graduated",
           "lines-0-tiers": "1000 | 0.1 | 0\n500 | 0.05 | 0\n* | 0.01 | 0"},
    )  # fmt: skip

    response = client.post(reverse("admin:catalog_contract_add"), form)

    assert b"A usage charge needs a meter." in response.content
    assert not Contract.objects.exists()


def test_a_viewer_cannot_accept_and_other_projects_cannot_download(client, project, other_project, contract):
    _staff(client, project, Role.VIEWER)
    client.post(
        reverse("admin:catalog_contract_changelist"), {"action": "accept", "_selected_action": [contract.pk]}
    )
    contract.refresh_from_db()
    assert contract.status == ContractStatus.DRAFT

    _staff(client, other_project, Role.OWNER)
    assert client.get(reverse("admin:catalog_contract_document", args=[contract.pk])).status_code == 404
