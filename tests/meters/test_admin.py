"""The back office: meters through their services, the event explorer, the unmatched queue and the
customer usage panel."""

import re

import pytest
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from meters.admin import customer_usage_panel
from meters.models import Aggregation, Meter, UsageEvent
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.meters.conftest import JANUARY, at, record

pytestmark = pytest.mark.django_db

EXPLORER = reverse("admin:meters_usageevent_changelist")
QUEUE = reverse("admin:meters_unmatchedusageevent_changelist")


@pytest.fixture
def staff(client, project):
    def login(role=Role.BILLING_ADMIN):
        client.force_login(MembershipFactory(project=project, role=role).user)
        return client

    return login


@pytest.fixture
def usage(project, other_project, subscription):
    record(
        project,
        {"customer": "cus_8fq", "value": 5, "timestamp": at(2)},
        {"customer": "cus_8fq", "value": 7, "timestamp": at(9)},
        {"customer": "stranger", "value": 1},
        {"customer": "stranger", "value": 2},
        {"customer": "cus_8fq", "meter": "nope", "value": 3},
        meter="api_calls",
    )
    record(other_project, {"customer": "theirs", "meter": "x", "value": 1})


def _listed(response) -> list[str]:
    return sorted(
        event.customer_external_id + ":" + str(event.value.normalize())
        for event in response.context["cl"].result_list
    )


def test_the_explorer_lists_the_projects_events_with_filters(
    staff, usage, meter, django_assert_max_num_queries
):
    client = staff(Role.VIEWER)

    with django_assert_max_num_queries(14):
        everything = client.get(EXPLORER)

    assert everything.status_code == 200
    assert _listed(everything) == ["cus_8fq:3", "cus_8fq:5", "cus_8fq:7", "stranger:1", "stranger:2"]
    assert b"Unmatched: <strong>3</strong>" in everything.content
    assert _listed(client.get(EXPLORER, {"status": "matched"})) == ["cus_8fq:5", "cus_8fq:7"]
    assert _listed(client.get(EXPLORER, {"status": "unknown_meter"})) == ["cus_8fq:3"]
    assert _listed(client.get(EXPLORER, {"meter": meter.pk, "customer": "cus_8fq"})) == [
        "cus_8fq:5",
        "cus_8fq:7",
    ]
    assert _listed(client.get(EXPLORER, {"customer": "stranger"})) == ["stranger:1", "stranger:2"]
    assert _listed(client.get(EXPLORER, {"from": "2026-01-05", "to": "2026-01-10T00:00:00Z"})) == [
        "cus_8fq:7"
    ]


def test_an_event_opens_read_only(staff, usage):
    client = staff(Role.VIEWER)
    event = UsageEvent.objects.filter(customer_external_id="stranger").first()

    response = client.get(reverse("admin:meters_usageevent_change", args=[event.pk]))

    assert response.status_code == 200
    assert event.public_id.encode() in response.content
    assert client.get(reverse("admin:meters_usageevent_add")).status_code == 403


def test_the_unmatched_queue_counts_by_reason_and_rematches(staff, usage, project, plan):
    client = staff(Role.BILLING_ADMIN)
    subscribe(CustomerFactory(project=project, external_id="stranger"), plan, starts_at=JANUARY)

    queue = client.get(QUEUE)
    assert _listed(queue) == ["cus_8fq:3", "stranger:1", "stranger:2"]
    assert b"Unknown customer</a>: 2" in queue.content
    assert b"Unknown meter</a>: 1" in queue.content

    ids = list(UsageEvent.objects.filter(customer_external_id="stranger").values_list("pk", flat=True))
    client.post(QUEUE, {"action": "rematch", "_selected_action": ids})

    assert _listed(client.get(QUEUE)) == ["cus_8fq:3"]
    assert UsageEvent.objects.filter(customer_external_id="stranger", unmatched_reason="").count() == 2


def test_the_index_shows_the_unmatched_usage_of_the_users_projects(staff, usage, project, other_project):
    client = staff(Role.VIEWER)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    html = response.content.decode()
    assert (
        f'<th scope="row">Acme</th>\n        <td><a href="{QUEUE}?project={project.pk}">3 unmatched events</a>'
        in html
    )
    assert "Globex" not in html  # a project the user is no member of
    assert _listed(client.get(QUEUE, {"project": project.pk})) == ["cus_8fq:3", "stranger:1", "stranger:2"]


def test_a_superuser_sees_every_projects_unmatched_usage(admin_client, usage, project, other_project):
    html = admin_client.get(reverse("admin:index")).content.decode()

    assert f'<a href="{QUEUE}?project={project.pk}">3 unmatched events</a>' in html
    assert f'<a href="{QUEUE}?project={other_project.pk}">1 unmatched event</a>' in html


def test_viewers_cannot_rematch(staff, usage):
    client = staff(Role.VIEWER)

    response = client.get(QUEUE)

    assert b'value="rematch"' not in response.content


def test_meters_are_written_through_their_services(staff, project, subscription, meter):
    client = staff(Role.BILLING_ADMIN)
    record(project, {"customer": "cus_8fq", "value": 1}, meter="api_calls")
    form = {
        "name": "API requests",
        "unit": "calls",
        "aggregation": Aggregation.MAX,
        "filters": "[]",
        "group_by": "[]",
        # JSON fields with a callable default post their initial value too, as the admin page does.
        "initial-filters": "[]",
        "initial-group_by": "[]",
    }

    locked = client.post(reverse("admin:meters_meter_change", args=[meter.pk]), form)
    assert locked.status_code == 200
    assert "Usage was already recorded" in str(locked.context["adminform"].form.errors["aggregation"])
    meter.refresh_from_db()
    assert meter.aggregation == Aggregation.SUM

    renamed = client.post(
        reverse("admin:meters_meter_change", args=[meter.pk]), {**form, "aggregation": "sum"}
    )
    assert renamed.status_code == 302, renamed.context["adminform"].form.errors
    meter.refresh_from_db()
    assert meter.name == "API requests"

    added = client.post(
        reverse("admin:meters_meter_add"),
        {
            "project": project.pk,
            "code": "gb",
            "name": "GB",
            "aggregation": "max",
            "filters": "[]",
            "group_by": "[]",
        },
    )
    assert added.status_code == 302
    assert Meter.objects.get(code="gb").aggregation == Aggregation.MAX
    audit = AuditLogEntry.objects.filter(object_type="meter").order_by("id")
    user = int(client.session["_auth_user_id"])
    assert list(audit.values_list("action", "actor_user")) == [
        ("meter.updated", user),
        ("meter.created", user),
    ]


def test_invalid_filters_are_form_errors(staff, project):
    client = staff(Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:meters_meter_add"),
        {"project": project.pk, "code": "gb", "name": "GB", "aggregation": "sum",
         "filters": '[{"property": "region", "operator": "like"}]', "group_by": "[]"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "Operator must be one of" in str(response.context["adminform"].form.errors["filters"])
    assert not Meter.objects.filter(code="gb").exists()


def test_the_customer_usage_panel(project, customer, meter):
    seats = MeterFactory(project=project, code="seats", name="Seats", aggregation=Aggregation.MAX)
    plan = make_plan(
        project, charges=[{"meter": meter, "unit_price": "1"}, {"meter": seats, "unit_price": "1"}]
    )
    subscribe(customer, plan, starts_at=JANUARY)
    record(
        project,
        {"value": 40, "timestamp": at(2)},
        {"value": 10, "timestamp": at(3)},
        customer="cus_8fq",
        meter="api_calls",
    )
    record(project, {"value": 3, "timestamp": at(2)}, customer="cus_8fq", meter="seats")

    html = customer_usage_panel(customer)

    assert "API calls</strong> (api_calls, sum):\n          50 calls" in html
    assert "Seats</strong> (seats, maximum):\n          3" in html
    assert html.count('title="2026-01-02: 40"') == 1
    assert 'title="2026-01-03: 10"' in html
    assert ("height: 100%" in html, "height: 25%" in html) == (True, True)
    # one bar per day of the period so far (January 1 to 16, today included)
    assert html.count("min-width: 3px") == 2 * 16


def test_the_panel_without_subscriptions(project):
    assert "No current subscription." in customer_usage_panel(CustomerFactory(project=project))


def test_the_meter_form_takes_the_metering_options_and_refuses_bad_combinations(staff, project):
    client = staff(Role.BILLING_ADMIN)
    form = {"project": project.pk, "code": "peak", "name": "Peak", "aggregation": "max", "bucket": "hour",
            "rounding": "ceil", "rounding_precision": "1", "weighted_input": "level", "filters": "[]",
            "group_by": "[]"}  # fmt: skip

    refused = client.post(reverse("admin:meters_meter_add"), {**form, "aggregation": "weighted_sum"})
    added = client.post(reverse("admin:meters_meter_add"), form)

    assert refused.status_code == 200
    assert "cannot be bucketed" in str(refused.context["adminform"].form.errors["bucket"])
    assert added.status_code == 302, added.context["adminform"].form.errors
    meter = Meter.objects.get(code="peak")
    assert (meter.bucket, meter.rounding, meter.rounding_precision) == ("hour", "ceil", 1)


def test_values_and_quantities_read_as_numbers_in_the_project_s_locale(staff, project, customer, meter):
    subscribe(customer, make_plan(project, charges=[{"meter": meter, "unit_price": "1"}]), starts_at=JANUARY)
    record(
        project,
        {"value": "1234.5", "timestamp": at(2)},
        {"value": "0", "timestamp": at(2, 1)},
        {"value": "0.000001", "timestamp": at(3)},
        customer="cus_8fq",
        meter="api_calls",
    )
    event = UsageEvent.objects.get(value=0)
    client = staff(Role.VIEWER)

    listing = client.get(EXPLORER).content.decode()
    page = client.get(reverse("admin:meters_usageevent_change", args=[event.pk])).content.decode()

    values = re.findall(r'<td class="field-value_label">([^<]*)</td>', listing)
    assert values == ["0.000001", "0", "1,234.5"]
    assert re.search(r'field-value_label.*?<div class="readonly">0</div>', page, re.S)
    assert "E-12" not in listing + page
    assert ".000000" not in listing + page

    project.locale = "de_DE"
    project.save(update_fields=["locale"])
    html = customer_usage_panel(customer)
    assert "API calls</strong> (api_calls, sum):\n          1.234,500001 calls" in html
    assert 'title="2026-01-02: 1.234,5"' in html
