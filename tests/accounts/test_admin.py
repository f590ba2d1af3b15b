import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import ApiKey, AuditLogEntry, Role
from accounts.services import MASKED_VALUE, audit_record
from tests.accounts.factories import MembershipFactory, UserFactory, make_api_key, project_admin_form
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _staff(project, role):
    membership = MembershipFactory(project=project, role=role)
    return membership.user


def test_viewer_reads_but_cannot_change(client, project):
    client.force_login(_staff(project, Role.VIEWER))
    api_key, _ = make_api_key(project)
    url = reverse("admin:accounts_apikey_change", args=[api_key.pk])

    listing = client.get(reverse("admin:accounts_apikey_changelist"))
    assert listing.status_code == 200
    assert b'value="revoke"' not in listing.content
    assert client.get(url).status_code == 200
    client.post(
        reverse("admin:accounts_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    assert client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_billing_admin_cannot_change_project_settings(client, project):
    client.force_login(_staff(project, Role.BILLING_ADMIN))
    url = reverse("admin:accounts_project_change", args=[project.pk])

    response = client.post(url, project_admin_form(project, name="Hijacked"))

    assert response.status_code == 403
    project.refresh_from_db()
    assert project.name == "Acme"


def test_owner_changes_are_audited_announced_and_secrets_masked(client, project):
    owner = _staff(project, Role.OWNER)
    client.force_login(owner)
    url = reverse("admin:accounts_project_change", args=[project.pk])

    response = client.post(
        url,
        project_admin_form(
            project, name="Acme Inc", stripe_secret_key="sk_test_123", unmatched_usage="reject"
        ),
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.name, project.stripe_secret_key, project.unmatched_usage) == (
        "Acme Inc",
        "sk_test_123",
        "reject",
    )
    entry = AuditLogEntry.objects.get(action="project.updated")
    assert entry.actor_label == owner.username
    assert entry.project == project
    assert entry.changes == {
        "name": ["Acme", "Acme Inc"],
        "stripe_secret_key": ["••••••", "••••••"],
        "unmatched_usage": ["keep", "reject"],
    }
    assert "sk_test_123" not in str(AuditLogEntry.objects.values_list("changes", flat=True))
    event = Event.objects.get(type="project.updated")
    assert event.data["changed_fields"] == ["name", "stripe_secret_key", "unmatched_usage"]
    assert event.data["stripe_secret_key_set"] is True
    assert "sk_test_123" not in str(event.data)


def test_a_logo_uploaded_in_the_admin_is_stored_and_announced(client, project):
    client.force_login(_staff(project, Role.OWNER))
    logo = SimpleUploadedFile("acme.png", b"\x89PNG\r\n\x1a\n", content_type="image/png")

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]), project_admin_form(project, logo=logo)
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.logo.name == "logos/acme.png"
    assert project.logo.read() == b"\x89PNG\r\n\x1a\n"
    assert Event.objects.get(type="project.updated").data["changed_fields"] == ["logo"]


def test_an_unchanged_project_form_records_nothing(client, project):
    client.force_login(_staff(project, Role.OWNER))

    response = client.post(
        reverse("admin:accounts_project_change", args=[project.pk]), project_admin_form(project)
    )

    assert response.status_code == 302
    assert not AuditLogEntry.objects.filter(action="project.updated").exists()
    assert not Event.objects.filter(type="project.updated").exists()


def test_staff_see_nothing_of_projects_they_are_not_in(client, project, other_project):
    client.force_login(_staff(project, Role.OWNER))
    theirs, _ = make_api_key(other_project)
    mine, _ = make_api_key(project)

    listing = client.get(reverse("admin:accounts_apikey_changelist"))
    detail = client.get(reverse("admin:accounts_apikey_change", args=[theirs.pk]))

    assert mine.prefix.encode() in listing.content
    assert theirs.prefix.encode() not in listing.content
    assert detail.status_code == 302  # "doesn't exist" and back to the index
    assert client.get(reverse("admin:accounts_project_change", args=[other_project.pk])).status_code == 302


def test_staff_without_membership_see_no_apps(client, project):
    client.force_login(UserFactory())

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert b"API keys" not in response.content


def test_owner_creates_a_key_in_the_admin_and_sees_the_secret_once(client, project):
    owner = _staff(project, Role.OWNER)
    client.force_login(owner)

    response = client.post(
        reverse("admin:accounts_apikey_add"),
        {"project": project.pk, "name": "warehouse", "scopes": ["billing:read"]},
        follow=True,
    )

    api_key = ApiKey.objects.get(name="warehouse")
    assert api_key.scopes == ["billing:read"]
    assert b"it will not be shown again: bk_" in response.content
    entry = AuditLogEntry.objects.get(action="api_key.created", object_id=api_key.public_id)
    assert entry.actor_label == owner.username
    event = Event.objects.get(type="api_key.created", object_id=api_key.public_id)
    assert event.data["scopes"] == ["billing:read"]


def test_owner_revokes_keys_with_the_admin_action(client, project):
    client.force_login(_staff(project, Role.OWNER))
    api_key, _ = make_api_key(project)

    client.post(
        reverse("admin:accounts_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )

    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert AuditLogEntry.objects.filter(action="api_key.revoked", object_id=api_key.public_id).count() == 1
    event = Event.objects.get(type="api_key.revoked", object_id=api_key.public_id)
    assert event.data["status"] == "revoked"


def test_owner_adds_a_member_through_the_inline_and_it_is_audited(client, project):
    client.force_login(_staff(project, Role.OWNER))
    newcomer = UserFactory(is_staff=False)
    data = project_admin_form(project)
    data.update({
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-0-user": newcomer.pk, "memberships-0-role": Role.VIEWER,
    })  # fmt: skip

    response = client.post(reverse("admin:accounts_project_change", args=[project.pk]), data)

    assert response.status_code == 302
    newcomer.refresh_from_db()
    assert newcomer.is_staff
    assert newcomer.memberships.get().role == Role.VIEWER
    assert AuditLogEntry.objects.filter(action="membership.created").count() == 1


def _changes_cell(html: str) -> str:
    found = re.search(r'<td class="field-changes_summary">(.*?)</td>', html, re.S)
    return found.group(1).strip()


def test_an_audit_entry_s_changes_read_as_text_with_secrets_masked(client, project):
    client.force_login(_staff(project, Role.VIEWER))
    entry = audit_record(
        project=project, actor=None, action="project.updated", target=project,
        changes={
            "name": ["Acme", "Acme Inc"], "stripe_secret_key": [MASKED_VALUE, MASKED_VALUE],
            "grace_period_hours": ["24", "48"], "unit_price": ["49.000000000000", "0E-12"],
            "event_types": [["invoice.*"], ["invoice.*", "customer.created"]], "price": ["12.50", ""],
        },
    )  # fmt: skip
    created = audit_record(
        project=project, actor=None, action="api_key.created", target=project,
        changes={"scopes": ["billing:read", "usage:write"], "options": {}, "enabled": True},
    )  # fmt: skip
    resend = audit_record(project=project, actor=None, action="invoice.resend", target=project, changes={})

    page = client.get(reverse("admin:accounts_auditlogentry_change", args=[entry.pk])).content.decode()
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td>([^<]*)</td></tr>', page)
    assert rows == [
        ("event_types", "invoice.* → invoice.*, customer.created"),
        ("grace_period_hours", "24 → 48"),
        ("name", "Acme → Acme Inc"),
        ("price", "12.50 → (empty)"),
        ("stripe_secret_key", f"{MASKED_VALUE} → {MASKED_VALUE}"),
        ("unit_price", "49 → 0"),
    ]
    created_page = client.get(
        reverse("admin:accounts_auditlogentry_change", args=[created.pk])
    ).content.decode()
    assert re.findall(r'<tr><th scope="row">([^<]+)</th><td>([^<]*)</td></tr>', created_page) == [
        ("enabled", "yes"),
        ("options", "(empty)"),
        ("scopes", "billing:read, usage:write"),  # values as created: a list of two is not a change
    ]
    resend_page = client.get(
        reverse("admin:accounts_auditlogentry_change", args=[resend.pk])
    ).content.decode()
    assert re.search(r'field-changes_table.*?<div class="readonly">-</div>', resend_page, re.S)
    listing = client.get(reverse("admin:accounts_auditlogentry_changelist"), {"q": "api_key.created"})
    assert (
        _changes_cell(listing.content.decode())
        == "enabled: yes; options: (empty); scopes: billing:read, usage:write"
    )
    for html in (page, created_page, resend_page):
        assert "{}" not in html
        assert "E-12" not in html
        assert "000000" not in html
