"""The webhook pages of the admin: endpoints (secret shown once), deliveries, redelivery."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditLogEntry, Role
from tests.accounts.factories import MembershipFactory
from tests.webhooks.factories import PUBLIC_URL, make_endpoint, record_event
from webhooks.models import Delivery, DisabledReason, WebhookEndpoint

pytestmark = pytest.mark.django_db

ENDPOINTS = reverse("admin:webhooks_webhookendpoint_changelist")
DELIVERIES = reverse("admin:webhooks_delivery_changelist")


def _staff(project, role):
    return MembershipFactory(project=project, role=role, user__password=None).user


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_an_owner_adds_an_endpoint_and_sees_the_secret_once(client, project):
    owner = _staff(project, Role.OWNER)
    client.force_login(owner)

    response = client.post(
        reverse("admin:webhooks_webhookendpoint_add"),
        {
            "project": project.pk,
            "url": PUBLIC_URL,
            "description": "ERP",
            "event_types": "invoice.*, customer.created",
        },
        follow=True,
    )

    endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 200
    assert (
        _messages(response)[0]
        == f"Copy the signing secret now; it will not be shown again: {endpoint.secret}"
    )
    assert endpoint.event_types == ["invoice.*", "customer.created"]
    assert (
        endpoint.secret
        not in client.get(
            reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])
        ).content.decode()
    )
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.created")
    assert (entry.actor_label, entry.object_id) == (owner.username, endpoint.public_id)


def test_the_admin_form_refuses_private_urls_and_bad_filters(client, project):
    client.force_login(_staff(project, Role.OWNER))

    response = client.post(
        reverse("admin:webhooks_webhookendpoint_add"),
        {"project": project.pk, "url": "http://169.254.169.254/", "event_types": "invoice.*, *"},
    )

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["url"] == [
        "The host '169.254.169.254' resolves to a non-public address (169.254.169.254). "
        "Webhooks go to public addresses only, unless the project allows private URLs."
    ]
    assert not WebhookEndpoint.objects.exists()


def test_changing_an_endpoint_goes_through_the_service(client, project):
    client.force_login(_staff(project, Role.OWNER))
    endpoint = make_endpoint(project, event_types=["invoice.*"])

    response = client.post(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        {"url": PUBLIC_URL, "description": "", "event_types": "invoice.*", "enabled": ""},
    )

    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "manual")
    assert AuditLogEntry.objects.get(action="webhook_endpoint.updated").changes == {
        "enabled": ["True", "False"]
    }


def test_endpoints_are_the_owners_to_change(client, project):
    client.force_login(_staff(project, Role.BILLING_ADMIN))
    endpoint = make_endpoint(project)

    listing = client.get(ENDPOINTS)
    response = client.post(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        {"url": PUBLIC_URL, "description": "", "event_types": "", "enabled": ""},
    )

    assert listing.status_code == 200
    assert b'value="rotate_secret"' not in listing.content
    assert response.status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.enabled is True


def test_the_rotate_action_shows_each_new_secret_once(client, project):
    client.force_login(_staff(project, Role.OWNER))
    endpoint = make_endpoint(project)
    old = endpoint.secret

    response = client.post(
        ENDPOINTS, {"action": "rotate_secret", "_selected_action": [endpoint.pk]}, follow=True
    )

    endpoint.refresh_from_db()
    assert endpoint.secret != old
    assert endpoint.previous_secret == old
    [message] = _messages(response)
    assert f"copy the new signing secret now; it will not be shown again: {endpoint.secret}" in message


def test_staff_see_only_their_projects_endpoints_and_deliveries(client, project, other_project):
    client.force_login(_staff(project, Role.VIEWER))
    mine = make_endpoint(project, url="https://93.184.215.14/mine")
    theirs = make_endpoint(other_project, url="https://93.184.215.14/theirs")
    record_event(project)
    record_event(other_project)

    endpoints = client.get(ENDPOINTS).content.decode()
    deliveries = client.get(DELIVERIES).content.decode()

    assert "/mine" in endpoints
    assert "/theirs" not in endpoints
    assert "/mine" in deliveries  # the endpoint column and its filter
    assert "/theirs" not in deliveries
    assert client.get(reverse("admin:webhooks_webhookendpoint_change", args=[theirs.pk])).status_code == 302
    assert client.get(reverse("admin:webhooks_webhookendpoint_change", args=[mine.pk])).status_code == 200


def test_a_delivery_page_is_read_only_and_the_event_page_lists_its_deliveries(
    client, loopback_project, receiver, record
):
    client.force_login(_staff(loopback_project, Role.OWNER))
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret
    receiver.script(500)
    event = record(loopback_project, "invoice.paid")
    delivery = Delivery.objects.get()

    page = client.get(reverse("admin:webhooks_delivery_change", args=[delivery.pk]))
    event_page = client.get(reverse("admin:webhooks_event_change", args=[event.pk]))

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert page.context["inline_admin_formsets"][0].formset.queryset.get().status_code == 500
    assert event_page.status_code == 200
    assert delivery.public_id in event_page.content.decode()


def test_the_redeliver_action_sends_the_event_again(
    client, loopback_project, receiver, record, django_capture_on_commit_callbacks
):
    admin = _staff(loopback_project, Role.BILLING_ADMIN)
    client.force_login(admin)
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret
    event = record(loopback_project)
    delivery = Delivery.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True
        )

    assert _messages(response) == ["Redelivering 1 event(s)."]
    assert receiver.ids() == [event.public_id, event.public_id]
    assert receiver.all_verified()
    assert Delivery.objects.filter(is_redelivery=True, status="succeeded").count() == 1
    assert AuditLogEntry.objects.get(action="webhook_delivery.redelivered").actor_label == admin.username


def test_a_viewer_cannot_redeliver(client, project):
    client.force_login(_staff(project, Role.VIEWER))
    make_endpoint(project)
    record_event(project)
    delivery = Delivery.objects.get()

    listing = client.get(DELIVERIES)
    client.post(DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]})

    assert listing.status_code == 200
    assert b'value="redeliver"' not in listing.content
    assert Delivery.objects.count() == 1


def test_redelivering_to_a_disabled_endpoint_is_refused_with_a_message(client, project):
    client.force_login(_staff(project, Role.OWNER))
    endpoint = make_endpoint(project)
    record_event(project)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    delivery = Delivery.objects.get()

    response = client.post(
        DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True
    )

    assert _messages(response) == [
        f"{delivery.public_id}: This endpoint is disabled; enable it to redeliver events to it."
    ]
    assert Delivery.objects.count() == 1


def test_the_health_filter_lists_failing_and_automatically_disabled_endpoints(client, project):
    client.force_login(_staff(project, Role.VIEWER))
    make_endpoint(project, url="https://93.184.215.14/ok")
    make_endpoint(project, url="https://93.184.215.14/off", enabled=False)  # turned off by a user
    failing = make_endpoint(project, url="https://93.184.215.14/failing")
    gone = make_endpoint(project, url="https://93.184.215.14/gone")
    worn_out = make_endpoint(project, url="https://93.184.215.14/worn-out")
    WebhookEndpoint.objects.filter(pk=failing.pk).update(failing_since=timezone.now())
    WebhookEndpoint.objects.filter(pk=gone.pk).update(enabled=False, disabled_reason=DisabledReason.GONE)
    WebhookEndpoint.objects.filter(pk=worn_out.pk).update(
        enabled=False, disabled_reason=DisabledReason.FAILING, failing_since=timezone.now()
    )

    def listed(health):
        response = client.get(ENDPOINTS, {"health": health})
        return sorted(endpoint.url.rsplit("/", 1)[1] for endpoint in response.context["cl"].result_list)

    assert listed("failing") == ["failing", "gone", "worn-out"]
    assert listed("not_failing") == ["off", "ok"]
