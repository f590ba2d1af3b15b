from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import Role
from catalog.models import Customer
from invoicing import services
from invoicing.models import (
    BillingReason,
    Document,
    EmailReason,
    EmailStatus,
    Invoice,
    InvoiceEmail,
    InvoiceStatus,
)
from tests.accounts.factories import MembershipFactory, project_admin_form
from tests.catalog.factories import CustomerFactory
from tests.invoicing.factories import issued_invoice

pytestmark = pytest.mark.django_db


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def _draft(project, status: str = InvoiceStatus.DRAFT) -> Invoice:
    """The next period's draft of a subscription whose opening invoice is issued."""
    opening = issued_invoice(project)
    return Invoice.objects.create(
        project=project, customer=opening.customer, subscription=opening.subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE, currency="USD", total=Decimal(0),
        period_start=opening.period_end, period_end=opening.period_end, status=status,
    )  # fmt: skip


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- invoice page ---------------------------------------------------------------------------------


def test_download_pdf_serves_the_kept_invoice_under_its_number(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project)

    response = client.get(reverse("admin:invoicing_invoice_pdf", args=[invoice.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="ACME-000001.pdf"'
    assert response.content.startswith(b"%PDF")


def test_a_draft_downloads_under_its_id(client, project):
    _login(client, project, Role.VIEWER)
    draft = _draft(project)

    response = client.get(reverse("admin:invoicing_invoice_pdf", args=[draft.pk]))

    assert response["Content-Disposition"] == f'attachment; filename="draft-{draft.public_id}.pdf"'
    assert response.content.startswith(b"%PDF")


def test_preview_email_shows_recipients_subject_body_and_attachment(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project)
    Customer.objects.filter(pk=invoice.customer_id).update(invoice_cc=["accounts@initech.example"])

    response = client.get(reverse("admin:invoicing_invoice_email", args=[invoice.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert invoice.customer.email in content
    assert "accounts@initech.example" in content
    assert "Invoice ACME-000001 from Acme" in content
    assert "<pre" in content
    assert "Amount due: $100.00" in content
    assert "ACME-000001.pdf" in content


def test_the_invoice_page_lists_its_emails_and_offers_send_again_to_who_may_act(client, project):
    invoice = issued_invoice(project)
    InvoiceEmail.objects.filter(invoice=invoice).update(
        status=EmailStatus.SENT, to=["ap@initech.example"], message_id="msg-1@billing.example"
    )
    url = reverse("admin:invoicing_invoice_change", args=[invoice.pk])

    _login(client, project, Role.VIEWER)
    as_viewer = client.get(url).content.decode()
    _login(client, project, Role.BILLING_ADMIN)
    as_admin = client.get(url).content.decode()

    for page in (as_viewer, as_admin):
        assert "Download PDF" in page
        assert "Preview email" in page
        assert "ap@initech.example" in page
        assert "msg-1@billing.example" in page
    assert ("Send again" in as_viewer, "Send again" in as_admin) == (False, True)


def test_send_again_queues_one_resend(client, project, django_capture_on_commit_callbacks):
    user = _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project)

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("admin:invoicing_invoice_resend", args=[invoice.pk]))

    assert response.status_code == 302
    resend = InvoiceEmail.objects.get(invoice=invoice, reason=EmailReason.RESEND)
    assert (resend.status, resend.requested_by) == (EmailStatus.QUEUED, user)
    assert InvoiceEmail.objects.filter(invoice=invoice).count() == 2  # the email and this one
    assert _messages(response) == [f"Queued: the invoice will be emailed to {invoice.customer.email}."]


def test_a_viewer_cannot_send_again(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project)

    response = client.post(reverse("admin:invoicing_invoice_resend", args=[invoice.pk]))

    assert response.status_code == 403
    assert not InvoiceEmail.objects.filter(reason=EmailReason.RESEND).exists()


def test_a_draft_cannot_be_sent(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    draft = _draft(project)

    response = client.post(reverse("admin:invoicing_invoice_resend", args=[draft.pk]))

    assert response.status_code == 302
    assert _messages(response) == ["Only an issued invoice can be sent; this one is draft."]
    assert not InvoiceEmail.objects.filter(invoice=draft).exists()
    assert b"Send again" not in client.get(reverse("admin:invoicing_invoice_change", args=[draft.pk])).content


def test_a_customer_without_an_address_is_not_sent_to(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project)
    Customer.objects.filter(pk=invoice.customer_id).update(email="")

    response = client.post(reverse("admin:invoicing_invoice_resend", args=[invoice.pk]))

    assert response.status_code == 302
    assert "no email address" in _messages(response)[0]
    assert not InvoiceEmail.objects.filter(reason=EmailReason.RESEND).exists()


def test_a_rejected_invoice_has_a_void_pdf_and_no_email(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    draft = _draft(project, InvoiceStatus.PENDING_REVIEW)
    services.invoice_reject(invoice=draft, actor=None, reason="Duplicate")

    page = client.get(reverse("admin:invoicing_invoice_change", args=[draft.pk]))
    response = client.get(reverse("admin:invoicing_invoice_pdf", args=[draft.pk]))

    assert b"Download PDF" in page.content
    assert b"Preview email" not in page.content
    assert response.status_code == 200
    assert response.content.startswith(b"%PDF")
    assert not Document.objects.exists()


def test_another_projects_invoice_is_not_found(client, project, other_project):
    _login(client, other_project, Role.OWNER)
    invoice = issued_invoice(project)

    for name in ("pdf", "email"):
        assert client.get(reverse(f"admin:invoicing_invoice_{name}", args=[invoice.pk])).status_code == 404
    assert client.post(reverse("admin:invoicing_invoice_resend", args=[invoice.pk])).status_code == 404
    assert InvoiceEmail.objects.filter(invoice=invoice).count() == 1


# --- credit notes and the email log ------------------------------------------------------------------


def test_credit_note_pdf(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project)
    note = services.credit_note_create(
        invoice=invoice, actor=None, reason="billing_error", amount=Decimal(10)
    )

    page = client.get(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
    response = client.get(reverse("admin:invoicing_creditnote_pdf", args=[note.pk]))

    assert b"Download PDF" in page.content
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{note.number}.pdf"'
    assert response.content.startswith(b"%PDF")


def test_the_email_log_filters_by_status_and_finds_by_number_or_recipient(client, project, other_project):
    _login(client, project, Role.VIEWER)
    failed = issued_invoice(project)
    InvoiceEmail.objects.filter(invoice=failed).update(
        status=EmailStatus.FAILED, to=["ap@initech.example"], error="SMTPRecipientsRefused"
    )
    issued_invoice(project)
    issued_invoice(other_project)
    url = reverse("admin:invoicing_invoiceemail_changelist")

    by_status = client.get(url, {"status__exact": "failed"}).content.decode()
    by_recipient = client.get(url, {"q": "ap@initech"}).content.decode()
    by_number = client.get(url, {"q": "ACME-000002"}).content.decode()
    everything = client.get(url).content.decode()

    assert "SMTPRecipientsRefused" in by_status
    assert "ACME-000002" not in by_status
    assert "ACME-000001" in by_recipient
    assert "ACME-000002" not in by_recipient
    assert "ACME-000002" in by_number
    assert "ACME-000001" not in by_number
    assert "Globex" not in everything


# --- project settings ------------------------------------------------------------------------------


def test_a_broken_invoice_template_is_refused_on_the_field(client, project):
    project.invoice_template = "<p>{{ document.number }}</p>"
    project.save()
    _login(client, project, Role.OWNER)

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]),
        project_admin_form(project, invoice_template="{% if %}"),
    )

    assert response.status_code == 200
    assert "The template does not compile" in str(
        response.context["adminform"].form.errors["invoice_template"]
    )
    project.refresh_from_db()
    assert project.invoice_template == "<p>{{ document.number }}</p>"


def test_a_working_invoice_template_is_saved(client, project):
    _login(client, project, Role.OWNER)

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]),
        project_admin_form(project, invoice_template="<h1>{{ company.name }} {{ document.number }}</h1>"),
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.invoice_template == "<h1>{{ company.name }} {{ document.number }}</h1>"


@pytest.mark.parametrize(
    ("content", "saved"),
    [
        (b"<h1>Invoice {{ document.number }}</h1>", "<h1>Invoice {{ document.number }}</h1>"),
        (b"<h1>{% if %}</h1>", ""),
        (b"\xff\xfe not text", ""),
    ],
)
def test_a_template_may_be_uploaded_and_is_checked_the_same_way(client, project, content, saved):
    _login(client, project, Role.OWNER)

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]),
        {**project_admin_form(project), "invoice_template_file": SimpleUploadedFile("invoice.html", content)},
    )

    assert response.status_code == (302 if saved else 200)
    project.refresh_from_db()
    assert project.invoice_template == saved


def test_a_broken_email_subject_is_refused_on_the_field(client, project):
    _login(client, project, Role.OWNER)

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]),
        project_admin_form(project, email_subject_template="Invoice {% if %}"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "The template does not compile" in str(errors["email_subject_template"])
    project.refresh_from_db()
    assert project.email_subject_template == ""


def test_the_preview_shows_unsaved_branding_and_saves_nothing(client, project):
    _login(client, project, Role.VIEWER)
    url = reverse("admin:accounts_project_invoice_preview", args=[project.pk])

    response = client.get(url, {"accent_color": "#ff0066", "company_name": "Acme Europe GmbH"})
    bad_colour = client.get(url, {"accent_color": "red;}</style><script>"})
    pdf = client.get(url, {"format": "pdf", "company_name": "Acme Europe GmbH"})

    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"].startswith("sandbox")
    content = response.content.decode()
    assert "#ff0066" in content
    assert "Acme Europe GmbH" in content
    assert "<script>" not in bad_colour.content.decode()
    assert project.accent_color in bad_colour.content.decode()
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    project.refresh_from_db()
    assert (project.accent_color, project.company_name) == ("#1f6feb", "")


def test_the_project_page_embeds_the_preview(client, project):
    _login(client, project, Role.VIEWER)

    page = client.get(reverse("admin:accounts_project_change", args=[project.pk])).content.decode()

    assert reverse("admin:accounts_project_invoice_preview", args=[project.pk]) in page
    assert "<iframe" in page


def test_another_projects_preview_is_not_found(client, project, other_project):
    _login(client, other_project, Role.OWNER)

    response = client.get(reverse("admin:accounts_project_invoice_preview", args=[project.pk]))

    assert response.status_code == 404


# --- customers ---------------------------------------------------------------------------------------


def _customer_form(project, customer, **changes):
    data = {
        "project": project.pk, "external_id": customer.external_id, "name": customer.name,
        "email": customer.email, "currency": "USD", "timezone": "UTC", "billing_address": "{}",
        "metadata": "", "tax_status": "taxable",
        "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0",
    }  # fmt: skip
    data.update(changes)
    return data


def test_customer_invoice_addresses_are_typed_as_text(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project)
    url = reverse("admin:catalog_customer_change", args=[customer.pk])

    response = client.post(
        url,
        _customer_form(
            project,
            customer,
            locale="de_DE",
            invoice_emails="a@x.com, b@y.com",
            invoice_cc="c@z.com\nd@z.com",
        ),
    )

    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.locale, customer.invoice_emails, customer.invoice_cc) == (
        "de_DE",
        ["a@x.com", "b@y.com"],
        ["c@z.com", "d@z.com"],
    )
    assert "a@x.com, b@y.com" in client.get(url).content.decode()


def test_a_bad_invoice_address_is_refused(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project, invoice_emails=["a@x.com"])

    response = client.post(
        reverse("admin:catalog_customer_change", args=[customer.pk]),
        _customer_form(project, customer, invoice_emails="nope"),
    )

    assert response.status_code == 200
    assert "Enter a valid email address." in str(response.context["adminform"].form.errors["invoice_emails"])
    customer.refresh_from_db()
    assert customer.invoice_emails == ["a@x.com"]
