from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from invoicing.billing import billing_close
from invoicing.models import Invoice, InvoiceStatus, LineType
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

FEB_1 = datetime(2026, 2, 1, 1, tzinfo=UTC)


@pytest.fixture
def held(project):
    """Two subscriptions' invoices held for review."""
    project.invoice_delivery = "review"
    project.save()
    plan = make_plan(project, name="Pro", base_fee="49")
    with time_machine.travel(FEB_1, tick=False):
        for name in ("Initech", "Globex"):
            subscribe(
                CustomerFactory(project=project, name=name), plan, starts_at=datetime(2026, 1, 1, tzinfo=UTC)
            )
        billing_close(as_of=FEB_1)
    return Invoice.objects.filter(status=InvoiceStatus.PENDING_REVIEW).order_by("id")


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def test_the_queue_lists_what_awaits_approval_with_the_change_vs_the_previous_invoice(client, project, held):
    _login(client, project, Role.BILLING_ADMIN)

    page = client.get(reverse("admin:invoicing_pendingreviewinvoice_changelist"))

    assert page.status_code == 200
    content = page.content.decode()
    assert content.count("$49.00") == 4  # 2 opening + 2 cycle invoices
    assert ("Initech" in content, "Globex" in content) == (True, True)
    # An opening invoice compares with no cycle invoice: each subscription's cycle has no like period.
    assert (content.count("— first"), content.count("— no like period")) == (2, 2)


def test_a_billing_admin_adjusts_then_approves(client, project, held):
    user = _login(client, project, Role.BILLING_ADMIN)
    invoice = held[1]
    url = reverse("admin:invoicing_invoice_change", args=[invoice.pk])

    page = client.get(url)
    client.post(reverse("admin:invoicing_invoice_adjust", args=[invoice.pk]),
                {"description": "Onboarding workshop", "amount": "150.00", "reason": "Sold on the call of 20 January"})  # fmt: skip
    client.post(reverse("admin:invoicing_invoice_approve", args=[invoice.pk]))

    assert b"Approve and issue" in page.content
    invoice.refresh_from_db()
    assert (invoice.status, invoice.number, invoice.total, invoice.reviewed_by) == (
        InvoiceStatus.OPEN, "ACME-000001", Decimal("199.00"), user,
    )  # fmt: skip
    adjustment = invoice.lines.get(type=LineType.ADJUSTMENT)
    assert (adjustment.created_by, adjustment.reason) == (user, "Sold on the call of 20 January")
    by_user = AuditLogEntry.objects.filter(object_id=invoice.public_id, actor_user=user).order_by("id")
    assert list(by_user.values_list("action", flat=True)) == ["invoice.updated", "invoice.finalized"]
    assert b"Approve and issue" not in client.get(url).content  # issued: read-only now


def test_reject_needs_a_reason(client, project, held):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = held[0]

    empty = client.post(reverse("admin:invoicing_invoice_reject", args=[invoice.pk]), {"reason": ""})
    client.post(
        reverse("admin:invoicing_invoice_reject", args=[invoice.pk]),
        {"reason": "Customer churned in December"},
    )

    assert b"This field is required" in empty.content
    invoice.refresh_from_db()
    assert (invoice.status, invoice.number, invoice.void_reason) == (
        InvoiceStatus.VOID,
        None,
        "Customer churned in December",
    )


def test_void_and_credit_from_the_invoice_page(client, project, held):
    _login(client, project, Role.BILLING_ADMIN)
    first, second, *_ = list(held)
    client.post(reverse("admin:invoicing_invoice_approve", args=[first.pk]))
    client.post(reverse("admin:invoicing_invoice_approve", args=[second.pk]))

    no_reason = client.post(reverse("admin:invoicing_invoice_void", args=[first.pk]), {"reason": ""})
    client.post(
        reverse("admin:invoicing_invoice_void", args=[first.pk]), {"reason": "Sent to the wrong company"}
    )
    client.post(
        reverse("admin:invoicing_invoice_credit", args=[second.pk]),
        {"reason": "billing_error", "amount": "10.00", "memo": "Goodwill"},
    )

    assert b"This field is required" in no_reason.content
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.void_reason) == (InvoiceStatus.VOID, "Sent to the wrong company")
    note = second.credit_notes.get()
    assert (note.reason, note.memo, note.amount) == ("billing_error", "Goodwill", Decimal("10.00"))
    assert second.amount_due == Decimal("39.00")


def test_bulk_approve_and_bulk_reject(client, project, held):
    _login(client, project, Role.OWNER)
    changelist = reverse("admin:invoicing_pendingreviewinvoice_changelist")
    first, second, third, fourth = held

    client.post(changelist, {"action": "approve_selected", "_selected_action": [first.pk, second.pk]})
    confirm = client.post(
        changelist, {"action": "reject_selected", "_selected_action": [third.pk, fourth.pk]}
    )
    client.post(
        changelist,
        {"action": "reject_selected", "_selected_action": [third.pk, fourth.pk], "reason": "Duplicate run"},
    )

    assert b"Reject these invoices?" in confirm.content
    statuses = dict(Invoice.objects.values_list("pk", "status"))
    assert [statuses[i.pk] for i in held] == ["open", "open", "void", "void"]


def test_a_viewer_sees_the_queue_but_cannot_act(client, project, held):
    _login(client, project, Role.VIEWER)
    invoice = held[0]

    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))
    approve = client.post(reverse("admin:invoicing_invoice_approve", args=[invoice.pk]))
    client.post(reverse("admin:invoicing_pendingreviewinvoice_changelist"),
                {"action": "approve_selected", "_selected_action": [invoice.pk]})  # fmt: skip

    assert page.status_code == 200
    assert b"Approve and issue" not in page.content
    assert approve.status_code == 403
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.PENDING_REVIEW


def test_staff_of_another_project_cannot_see_the_invoice(client, project, other_project, held):
    _login(client, other_project, Role.OWNER)

    assert client.get(reverse("admin:invoicing_invoice_change", args=[held[0].pk])).status_code == 302
    assert client.post(reverse("admin:invoicing_invoice_approve", args=[held[0].pk])).status_code == 404


def test_an_adjustment_the_service_refuses_is_shown_on_its_field_with_what_was_typed(client, project, held):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = held[0]

    response = client.post(
        reverse("admin:invoicing_invoice_adjust", args=[invoice.pk]),
        {"description": "Workshop", "amount": "10.005", "reason": "Agreed"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {"amount": ["USD amounts have at most 2 decimal places."]}
    assert b'value="Workshop"' in response.content
    assert not invoice.lines.filter(type=LineType.ADJUSTMENT).exists()


def test_mark_uncollectible_from_the_invoice_page(client, project, held):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = held[0]
    url = reverse("admin:invoicing_invoice_change", args=[invoice.pk])
    client.post(reverse("admin:invoicing_invoice_approve", args=[invoice.pk]))

    page = client.get(url)
    response = client.post(reverse("admin:invoicing_invoice_uncollectible", args=[invoice.pk]))
    again = client.post(reverse("admin:invoicing_invoice_uncollectible", args=[invoice.pk]), follow=True)

    assert b"Mark uncollectible" in page.content
    assert response.url == url
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.UNCOLLECTIBLE
    assert b"Mark uncollectible" not in again.content
    assert "Only an open invoice can be marked uncollectible; this one is uncollectible." in [
        str(message) for message in again.context["messages"]
    ]


def test_a_viewer_cannot_mark_an_invoice_uncollectible(client, project, held):
    invoice = held[0]
    _login(client, project, Role.OWNER)
    client.post(reverse("admin:invoicing_invoice_approve", args=[invoice.pk]))
    _login(client, project, Role.VIEWER)

    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))
    response = client.post(reverse("admin:invoicing_invoice_uncollectible", args=[invoice.pk]))

    assert b"Mark uncollectible" not in page.content
    assert response.status_code == 403
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.OPEN


def test_the_invoice_page_shows_how_the_total_comes(client, project, held):
    # Given an invoice in review with a 10 % coupon and a 20 % default VAT applied at approval
    from catalog.coupons import coupon_create, coupon_redeem
    from tests.catalog.factories import TaxRateFactory

    _login(client, project, Role.BILLING_ADMIN)
    invoice = held[1]
    TaxRateFactory(project=project, name="VAT", percentage=Decimal(20), jurisdiction="", is_default=True)
    coupon = coupon_create(
        project=project,
        code="ten",
        name="Ten",
        kind="percentage",
        percent_off="10",
        duration="forever",
        actor=None,
    )
    coupon_redeem(customer=invoice.customer, coupon=coupon, actor=None)
    client.post(reverse("admin:invoicing_invoice_approve", args=[invoice.pk]))

    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()

    # 49.00 - 4.90 = 44.10, + 8.82 VAT = 52.92
    assert (
        "subtotal $49.00 · discount -$4.90 · tax $8.82 · total $52.92 · "
        "prepaid credits $0.00 · amount due $52.92"
    ) in page
