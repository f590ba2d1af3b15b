"""The contract's page: one document row whose link is the protected download view, the lines'
tiers as a table, and who may read the signed PDF."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from accounts.models import Role
from catalog.models import Contract, ContractLine, Plan
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import ContractFactory, MeterFactory, ProductFactory, make_plan, tier_rows

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _login(client, project, role):
    client.force_login(MembershipFactory(project=project, role=role).user)


@pytest.fixture
def contract(project):
    return ContractFactory(project=project, document=SimpleUploadedFile("initech-msa.pdf", PDF))


def _document_url(contract):
    return reverse("admin:catalog_contract_document", args=[contract.pk])


def test_the_page_has_one_document_row_linking_to_the_protected_view(client, project, contract):
    _login(client, project, Role.BILLING_ADMIN)

    page = client.get(reverse("admin:catalog_contract_change", args=[contract.pk])).content.decode()

    assert page.count("field-document") == 1
    assert f'Currently: <a href="{_document_url(contract)}">initech-msa.pdf</a>' in page
    assert contract.document.url not in page  # /media/contracts/…, which nobody serves
    assert "field-download" not in page


def test_a_viewer_reads_the_document_inline_under_its_name(client, project, contract):
    _login(client, project, Role.VIEWER)

    page = client.get(reverse("admin:catalog_contract_change", args=[contract.pk])).content.decode()
    response = client.get(_document_url(contract))

    assert f'<a href="{_document_url(contract)}">initech-msa.pdf</a>' in page
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="initech-msa.pdf"'
    assert b"".join(response.streaming_content) == PDF


def test_nobody_else_reads_the_document(client, project, other_project, contract):
    anonymous = Client().get(_document_url(contract))
    _login(client, other_project, Role.OWNER)
    foreign = client.get(_document_url(contract))

    assert (anonymous.status_code, anonymous["Location"]) == (
        302,
        f"/admin/login/?next={_document_url(contract)}",
    )
    assert foreign.status_code == 404
    _login(client, project, Role.OWNER)
    assert client.get(contract.document.url).status_code == 404  # media is not routed
    assert client.get(f"/{contract.document.name}").status_code == 404


def _contract_form(project, meter, **changes):
    data = {
        "project": project.pk, "title": "Globex MSA", "document": SimpleUploadedFile("msa.pdf", PDF),
        "customer_name": "Globex", "currency": "USD", "interval": "month", "interval_count": 1,
        "billing_anchor": "calendar", "start_date": "2026-03-01", "payment_terms_days": 30,
        "lines-TOTAL_FORMS": "2", "lines-INITIAL_FORMS": "0",
        "lines-0-kind": "fixed", "lines-0-name": "Retainer", "lines-0-pricing_model": "per_unit",
        "lines-0-unit_price": "1000", "lines-0-timing": "in_advance", "lines-0-package_rounding": "up",
        "lines-0-free_units": "0", "lines-0-minimum_amount": "0", "lines-0-position": "0",
        **tier_rows("lines-0-tiers", ("", "", "")),
        "lines-1-kind": "usage", "lines-1-name": "OCR", "lines-1-meter": meter.pk,
        "lines-1-pricing_model": "graduated_percentage", "lines-1-unit_price": "0", "lines-1-timing": "in_arrears",
        "lines-1-package_rounding": "up", "lines-1-free_units": "0", "lines-1-minimum_amount": "0",
        "lines-1-position": "1",
        **tier_rows("lines-1-tiers", ("10000", "2.5", "0"), ("", "1.25", "")),
    }  # fmt: skip
    data.update(changes)
    return data


def test_contract_lines_take_tiers_from_their_own_table(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    meter = MeterFactory(project=project)

    response = client.post(reverse("admin:catalog_contract_add"), _contract_form(project, meter))

    assert response.status_code == 302
    retainer, ocr = Contract.objects.get().lines.order_by("position")
    assert (retainer.unit_price, retainer.tiers) == (Decimal(1000), [])
    assert ocr.tiers == [
        {"up_to": "10000", "rate": "2.5", "flat_fee": "0"},
        {"up_to": None, "rate": "1.25", "flat_fee": "0"},
    ]


def test_an_accepted_contract_shows_its_tiers_and_prices_in_its_currency(client, project):
    project.locale = "de_DE"
    project.save()
    contract = ContractFactory(project=project, currency="EUR", status="accepted")
    ContractLine.objects.create(
        contract=contract, kind="usage", meter=MeterFactory(project=project), pricing_model="graduated",
        tiers=[{"up_to": "1000", "unit_price": "0.10", "flat_fee": "0"}, {"up_to": None, "unit_price": "0.05", "flat_fee": "5"}],
        minimum_amount=Decimal("49"),
    )  # fmt: skip
    _login(client, project, Role.OWNER)

    page = client.get(reverse("admin:catalog_contract_change", args=[contract.pk])).content.decode()

    # As the locale writes money (de_DE: the sign after), unit prices with every decimal they have.
    assert "<tr><td>1.000</td><td>0,10\xa0€</td><td>0,00\xa0€</td></tr>" in page
    assert "<tr><td>∞</td><td>0,05\xa0€</td><td>5,00\xa0€</td></tr>" in page
    assert '<div class="readonly">49,00\xa0€</div>' in page
    assert "49.000000000000" not in page


def _plan_form(plan, charge, meter, tiers):
    data = {
        "product": plan.product_id, "name": plan.name, "description": "", "currency": "USD",
        "interval": "month", "interval_count": "1", "trial_days": "0", "bill_usage_during_trial": "on",
        "base_fee": "49", "base_fee_timing": "in_advance", "minimum_commitment": "0", "entitlements": "{}",
        "charges-TOTAL_FORMS": "1", "charges-INITIAL_FORMS": "1", "charges-0-id": charge.pk,
        "charges-0-plan": plan.pk, "charges-0-kind": "usage", "charges-0-meter": meter.pk,
        "charges-0-pricing_model": "graduated", "charges-0-unit_price": "0", "charges-0-package_rounding": "up",
        "charges-0-timing": "in_arrears", "charges-0-free_units": "0", "charges-0-minimum_amount": "0",
        "charges-0-amount_property": "amount",
        **tier_rows("charges-0-tiers", *tiers),
    }  # fmt: skip
    return data


@pytest.fixture
def graduated_plan(project):
    meter = MeterFactory(project=project)
    plan = make_plan(
        project, product=ProductFactory(project=project), base_fee="49",
        charges=[{"meter": meter, "pricing_model": "graduated",
                  "tiers": [{"up_to": "1000", "unit_price": "0", "flat_fee": "0"},
                            {"up_to": None, "unit_price": "0.002", "flat_fee": "0"}]}],
    )  # fmt: skip
    return plan, plan.charges.get(), meter


def test_a_plan_shows_its_tiers_as_a_table_and_saves_the_edited_table(client, project, graduated_plan):
    plan, charge, meter = graduated_plan
    _login(client, project, Role.BILLING_ADMIN)
    url = reverse("admin:catalog_plan_change", args=[plan.pk])

    page = client.get(url).content.decode()
    response = client.post(
        url,
        _plan_form(plan, charge, meter, [("1000", "0", "0"), ("5000", "0.002", "1.5"), ("∞", "0.001", "")]),
    )

    assert 'name="charges-0-tiers-1-unit_price" id="id_charges-0-tiers-1-unit_price" value="0.002"' in page
    assert 'name="charges-0-tiers-4-up_to"' in page  # two tiers and three empty rows
    assert 'value="49"' in page
    assert response.status_code == 302
    charge.refresh_from_db()
    assert charge.tiers == [
        {"up_to": "1000", "unit_price": "0", "flat_fee": "0"},
        {"up_to": "5000", "unit_price": "0.002", "flat_fee": "1.5"},
        {"up_to": None, "unit_price": "0.001", "flat_fee": "0"},
    ]


def test_an_invalid_tier_is_shown_on_the_field_and_nothing_changes(client, project, graduated_plan):
    plan, charge, meter = graduated_plan
    _login(client, project, Role.BILLING_ADMIN)
    before = charge.tiers

    response = client.post(
        reverse("admin:catalog_plan_change", args=[plan.pk]),
        _plan_form(plan, charge, meter, [("1000", "0", "0"), ("500", "0.002", "0"), ("", "0.001", "0")]),
    )

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert list(errors) == ["tiers"]
    assert "Tier bounds must be strictly ascending" in errors["tiers"][0]
    assert (
        'name="charges-0-tiers-1-up_to" id="id_charges-0-tiers-1-up_to" value="500"'
        in response.content.decode()
    )
    charge.refresh_from_db()
    assert charge.tiers == before
    assert Plan.objects.count() == 1


def test_the_empty_inline_form_names_its_tier_inputs_with_the_formset_prefix(client, project):
    _login(client, project, Role.BILLING_ADMIN)

    page = client.get(reverse("admin:catalog_contract_add")).content.decode()

    assert 'name="lines-__prefix__-tiers-0-up_to"' in page
    assert 'name="lines-0-tiers-2-flat_fee"' in page
    assert '<label for="id_lines-0-tiers-0-up_to">Tiers:</label>' in page
