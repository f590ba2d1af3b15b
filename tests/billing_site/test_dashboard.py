"""The admin index's dashboard: the month's billing per currency, scoped to the user's projects,
each figure linking to its list, in a fixed number of queries; the charts; the unmatched panel."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from accounts.models import PaymentProcessor, Role
from billing_site.dashboard import Figure, dashboard_read
from invoicing.models import Invoice, InvoiceStatus
from meters.models import Aggregation
from payments.models import Payment, PaymentStatus
from tests.accounts.factories import MembershipFactory, UserFactory
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.invoicing.factories import draft_invoice
from tests.meters.conftest import record
from tests.webhooks.factories import make_endpoint
from webhooks.models import DisabledReason, WebhookEndpoint

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
INDEX = reverse("admin:index")
INVOICES = reverse("admin:invoicing_invoice_changelist")
PAYMENTS = reverse("admin:payments_payment_changelist")
ENDPOINTS = reverse("admin:webhooks_webhookendpoint_changelist")


@pytest.fixture(autouse=True)
def _frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield


def _invoice(project, status, *, total, currency="USD", issued_at=None, due_at=None, **amounts) -> Invoice:
    """An invoice as it stands in the given state (written straight to the row: the dashboard
    reads rows, whatever services put them there)."""
    invoice = draft_invoice(project, total=total)
    Invoice.objects.filter(pk=invoice.pk).update(
        status=status, currency=currency, issued_at=issued_at, due_at=due_at,
        **{name: D(value) for name, value in amounts.items()},
    )  # fmt: skip
    return invoice


def _payment(project, status, *, amount, paid_at, currency="USD", refunded="0", invoice=None) -> Payment:
    return Payment.objects.create(
        project=project, invoice=invoice, processor=PaymentProcessor.MANUAL, currency=currency,
        amount=D(amount), net=D(amount), amount_refunded=D(refunded), status=status, paid_at=paid_at,
    )  # fmt: skip


def _at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def books(project, other_project):
    """Acme's month in two currencies, and Globex's figures, which Acme's staff must never see."""
    # Issued in November, not void: billed.
    _invoice(project, InvoiceStatus.PAID, total="1234.50", issued_at=_at(11, 3), amount_paid="1234.50")
    _invoice(
        project, InvoiceStatus.OPEN, total="200.00", issued_at=_at(11, 10), due_at=_at(11, 20),
        amount_paid="50.00",
    )  # fmt: skip
    _invoice(project, InvoiceStatus.UNCOLLECTIBLE, total="10.00", issued_at=_at(11, 1))  # the first instant
    _invoice(
        project, InvoiceStatus.OPEN, currency="EUR", total="99.99", issued_at=_at(11, 2), due_at=_at(11, 10)
    )
    # Void: nowhere, though issued in November.
    _invoice(project, InvoiceStatus.VOID, currency="EUR", total="500.00", issued_at=_at(11, 5))
    # Issued in October: open and overdue (less its prepaid credits), and October's bar.
    _invoice(
        project, InvoiceStatus.OPEN, total="300.00", issued_at=_at(10, 5), due_at=_at(11, 4),
        credits_applied="20.00",
    )  # fmt: skip
    _invoice(project, InvoiceStatus.PAID, total="40.00", issued_at=_at(10, 31, 23, 59), amount_paid="40.00")
    _invoice(project, InvoiceStatus.PENDING_REVIEW, total="75.00")
    _invoice(project, InvoiceStatus.DRAFT, total="5.00")

    _payment(project, PaymentStatus.SUCCEEDED, amount="1234.50", refunded="34.50", paid_at=_at(11, 3))
    _payment(project, PaymentStatus.SUCCEEDED, amount="50.00", paid_at=_at(11, 12))
    _payment(project, PaymentStatus.SUCCEEDED, currency="EUR", amount="10.00", paid_at=_at(11, 14))
    _payment(project, PaymentStatus.FAILED, amount="70.00", paid_at=_at(11, 4))
    _payment(project, PaymentStatus.SUCCEEDED, currency="EUR", amount="30.00", paid_at=_at(10, 30))

    make_endpoint(project)  # healthy
    failing = make_endpoint(project, url="https://93.184.215.14/failing")
    gone = make_endpoint(project, url="https://93.184.215.14/gone")
    make_endpoint(project, url="https://93.184.215.14/off", enabled=False)  # disabled by a user
    WebhookEndpoint.objects.filter(pk=failing.pk).update(failing_since=_at(11, 14))
    WebhookEndpoint.objects.filter(pk=gone.pk).update(
        enabled=False, disabled_reason=DisabledReason.GONE, disabled_at=_at(11, 13)
    )

    # Another project: none of this counts for Acme.
    _invoice(other_project, InvoiceStatus.PAID, total="999.00", issued_at=_at(11, 3), amount_paid="999.00")
    _invoice(other_project, InvoiceStatus.OPEN, total="111.00", issued_at=_at(11, 4), due_at=_at(11, 5))
    _invoice(other_project, InvoiceStatus.PENDING_REVIEW, total="1.00")
    _payment(other_project, PaymentStatus.SUCCEEDED, amount="999.00", paid_at=_at(11, 3))
    other = make_endpoint(other_project, url="https://93.184.215.14/globex")
    WebhookEndpoint.objects.filter(pk=other.pk).update(failing_since=_at(11, 1))


@pytest.fixture
def usage(project, other_project):
    """This month's usage of four Acme meters (and one of October, and Globex's, left out)."""
    calls = MeterFactory(project=project, code="api_calls", name="API calls", unit="calls")
    searches = MeterFactory(
        project=project, code="searches", name="Searches", unit="calls", aggregation=Aggregation.COUNT
    )
    seats = MeterFactory(
        project=project, code="seats", name="Seats", unit="seats", aggregation=Aggregation.MAX
    )
    storage = MeterFactory(project=project, code="storage", name="Storage", unit="GB", property="gb")
    plan = make_plan(
        project,
        charges=[{"meter": meter, "unit_price": "0.01"} for meter in (calls, searches, seats, storage)],
    )
    subscribe(CustomerFactory(project=project, external_id="cus_1"), plan, starts_at=_at(9, 1))
    subscribe(CustomerFactory(project=project, external_id="cus_2"), plan, starts_at=_at(9, 1))
    november = _at(11, 2).isoformat()
    record(project, {"customer": "cus_1", "value": "40.5"}, {"customer": "cus_2", "value": "1200"},
           meter="api_calls", timestamp=november)  # fmt: skip
    record(
        project, {"customer": "cus_1", "value": "9999"}, meter="api_calls", timestamp=_at(10, 31).isoformat()
    )
    record(project, *[{"customer": "cus_1"}] * 3, meter="searches", timestamp=november)
    record(project, {"customer": "cus_1", "value": "5"}, {"customer": "cus_2", "value": "8"},
           meter="seats", timestamp=november)  # fmt: skip
    record(
        project,
        *[{"customer": "cus_1", "value": "1", "properties": {"gb": 2}}] * 2,
        meter="storage",
        timestamp=november,
    )
    record(project, {"customer": "nobody", "value": "1"}, meter="api_calls", timestamp=november)  # unmatched

    theirs = MeterFactory(project=other_project, code="their_calls", name="Their calls", unit="calls")
    their_plan = make_plan(other_project, charges=[{"meter": theirs, "unit_price": "0.01"}])
    subscribe(CustomerFactory(project=other_project, external_id="g_1"), their_plan, starts_at=_at(9, 1))
    record(other_project, {"customer": "g_1", "value": "7"}, meter="their_calls", timestamp=november)


NOT_VOID = "&status__in=open%2Cpaid%2Cuncollectible"  # what the billed figures count


def _login(client, project, role=Role.VIEWER):
    client.force_login(MembershipFactory(project=project, role=role).user)
    return client


def _figures(html: str) -> dict[str, list[str]]:
    """Each figure's title → its link and its lines of text."""
    found = {}
    for url, body in re.findall(r'<a class="dashboard-figure" href="([^"]+)"[^>]*>(.*?)</a>', html, re.S):
        lines = [re.sub(r"<[^>]+>", "", line).strip() for line in re.split(r"\n|</strong>", body)]
        title, *rest = [line for line in lines if line]
        found[title] = [url.replace("&amp;", "&"), *rest]
    return found


# --- the figures ---------------------------------------------------------------------------------


def test_the_figures_count_the_projects_month_per_currency(books, usage, project, django_assert_num_queries):
    with django_assert_num_queries(6):
        data = dashboard_read(project_ids=[project.pk], now=timezone.now())

    assert data.month == NOW.date().replace(day=1)
    assert data.billed == Figure(count=4, amounts={"EUR": D("99.99"), "USD": D("1444.50")})
    assert data.collected == Figure(count=3, amounts={"EUR": D("10.00"), "USD": D("1250.00")})
    assert data.open == Figure(count=3, amounts={"EUR": D("99.99"), "USD": D("430.00")})
    assert data.overdue == Figure(count=2, amounts={"EUR": D("99.99"), "USD": D("280.00")})
    assert data.review == 1
    assert data.failing_endpoints == 2  # failing, and gone; not the healthy one nor the one turned off


def test_a_viewer_sees_the_dashboard_with_every_figure_linked_to_its_list(client, books, project):
    html = _login(client, project).get(INDEX).content.decode()

    assert _figures(html) == {
        "Billed": [f"{INVOICES}?issued_month=2026-11{NOT_VOID}", "€99.99", "$1,444.50", "4 issued invoices"],
        "Collected": [
            f"{PAYMENTS}?paid_month=2026-11&status__exact=succeeded", "€10.00", "$1,250.00", "3 payments"
        ],
        "Open": [f"{INVOICES}?status__exact=open", "€99.99", "$430.00", "3 open invoices"],
        "Overdue": [f"{INVOICES}?overdue=yes", "€99.99", "$280.00", "2 overdue invoices"],
        "Pending review": [reverse("admin:invoicing_pendingreviewinvoice_changelist"), "1 invoice"],
        "Failing webhook endpoints": [f"{ENDPOINTS}?health=failing", "2 endpoints"],
    }  # fmt: skip
    assert "November 2026 (UTC)" in html
    assert "$999.00" not in html
    assert "Globex" not in html


def test_staff_of_another_project_see_only_theirs(client, books, other_project):
    figures = _figures(_login(client, other_project).get(INDEX).content.decode())

    assert figures["Billed"][1:] == ["$1,110.00", "2 issued invoices"]
    assert figures["Collected"][1:] == ["$999.00", "1 payment"]
    assert figures["Overdue"][1:] == ["$111.00", "1 overdue invoice"]
    assert figures["Pending review"][1:] == ["1 invoice"]
    assert figures["Failing webhook endpoints"][1:] == ["1 endpoint"]


def test_a_superuser_sees_every_project(admin_client, books):
    figures = _figures(admin_client.get(INDEX).content.decode())

    assert figures["Billed"][1:] == ["€99.99", "$2,554.50", "6 issued invoices"]
    assert figures["Pending review"][1:] == ["2 invoices"]


def test_amounts_read_in_the_locale_the_projects_share_else_en_us(client, books, project, other_project):
    project.locale = "de_DE"
    project.save(update_fields=["locale"])
    user = MembershipFactory(project=project, role=Role.VIEWER).user
    client.force_login(user)

    assert _figures(client.get(INDEX).content.decode())["Billed"][1:3] == ["99,99\xa0€", "1.444,50\xa0$"]

    MembershipFactory(project=other_project, user=user, role=Role.VIEWER)  # en_US: the locales differ
    assert _figures(client.get(INDEX).content.decode())["Billed"][1:3] == ["€99.99", "$2,554.50"]


def test_the_links_list_what_the_figures_count(client, books, project):
    client = _login(client, project)

    billed = client.get(f"{INVOICES}?issued_month=2026-11{NOT_VOID}")
    payments = client.get(PAYMENTS, {"paid_month": "2026-11", "status__exact": "succeeded"})
    endpoints = client.get(ENDPOINTS, {"health": "failing"})

    assert billed.status_code == 200
    listed = billed.context["cl"].result_list
    assert len(listed) == 4  # the figure's count
    assert sum(i.total for i in listed if i.currency == "USD") == D("1444.50")  # and its amount
    assert sorted(str(p.amount - p.amount_refunded) for p in payments.context["cl"].result_list) == [
        "10.0000", "1200.0000", "50.0000",
    ]  # fmt: skip
    assert sorted(e.url for e in endpoints.context["cl"].result_list) == [
        "https://93.184.215.14/failing", "https://93.184.215.14/gone",
    ]  # fmt: skip
    for malformed in ("November", "0000-01", "9999-12", "2026-1"):
        assert client.get(PAYMENTS, {"paid_month": malformed}).url == f"{PAYMENTS}?e=1"


def test_the_index_costs_the_same_few_queries_whatever_the_data(
    client, books, usage, project, django_assert_max_num_queries
):
    client = _login(client, project)
    with django_assert_max_num_queries(14) as few:  # 9 of them the dashboard's, with the roles and projects
        client.get(INDEX)
    for day in range(1, 13):  # twelve more invoices and payments, and twelve more meters with usage
        _invoice(project, InvoiceStatus.OPEN, total="1.00", issued_at=_at(day, 1), due_at=_at(11, 1))
        _payment(project, PaymentStatus.SUCCEEDED, amount="1.00", paid_at=_at(11, day))
    extra = [MeterFactory(project=project, code=f"extra_{n}", unit="calls") for n in range(1, 13)]
    plan = make_plan(project, charges=[{"meter": meter, "unit_price": "1"} for meter in extra])
    subscribe(CustomerFactory(project=project, external_id="cus_3"), plan, starts_at=_at(9, 1))
    record(
        project,
        *[{"meter": meter.code, "value": "1"} for meter in extra],
        customer="cus_3",
        timestamp=_at(11, 2).isoformat(),
    )

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(INDEX)

    assert "extra_12" in response.content.decode()


# --- the charts ------------------------------------------------------------------------------------


def _bars(html: str) -> list[tuple[str, str, str]]:
    """(title, link, height) of each bar of the billed charts."""
    found = re.findall(r'<a href="([^"]+)" title="([^"]+)"\s+style="flex: 1; height: (\d+)%', html)
    return [(url.replace("&amp;", "&"), title, height) for url, title, height in found]


def test_billed_per_month_one_chart_per_currency_for_twelve_months(client, books, project):
    html = _login(client, project).get(INDEX).content.decode()

    bars = _bars(html)
    assert len(bars) == 2 * 12
    eur, usd = bars[:12], bars[12:]
    assert usd[0] == (f"{INVOICES}?issued_month=2025-12{NOT_VOID}", "Dec 2025: $0.00", "0")
    assert usd[-2:] == [
        (f"{INVOICES}?issued_month=2026-10{NOT_VOID}", "Oct 2026: $340.00", "23"),  # 340 / 1,444.50
        (f"{INVOICES}?issued_month=2026-11{NOT_VOID}", "Nov 2026: $1,444.50", "100"),
    ]
    assert [height for _, _, height in eur] == ["0"] * 11 + ["100"]  # the void invoice is not billed


def test_usage_per_meter_this_month_from_the_rollups(client, books, usage, project):
    html = _login(client, project).get(INDEX).content.decode()

    rows = re.findall(
        r'<tr class="usage-meter">.*?<a href="([^"]+)">([^<]+)</a>.*?height: 12px; width: (\d+)%.*?>([^<]+)</td>',
        html,
        re.S,
    )
    explorer = reverse("admin:meters_usageevent_changelist")
    assert [(name, width, text.strip()) for _, name, width, text in rows] == [
        ("API calls", "100", "1,240.5 calls"),  # sum over both customers, October left out
        ("Searches", "0", "3 calls"),  # a count, compared with the other meter in calls: 3 / 1,240.5
        ("Seats", "100", "8 seats"),  # the highest
        ("Storage", "100", "2 events"),  # a property: the rollups hold only its events
    ]
    assert rows[0][0].replace("&amp;", "&").startswith(f"{explorer}?meter=")
    assert rows[0][0].replace("&amp;", "&").endswith("&status=matched&from=2026-11-01")
    assert "Their calls" not in html


# --- the unmatched usage panel ---------------------------------------------------------------------


def test_the_unmatched_usage_panel_is_part_of_the_dashboard(client, usage, project):
    html = _login(client, project).get(INDEX).content.decode()
    queue = reverse("admin:meters_unmatchedusageevent_changelist")

    assert f'<a href="{queue}?project={project.pk}">1 unmatched event</a>' in html
    assert html.index("Unmatched usage") < html.index("Billed per month")


def test_staff_without_a_project_get_no_dashboard(client, books):
    client.force_login(UserFactory())

    response = client.get(INDEX)

    assert response.status_code == 200
    assert "billing-dashboard" not in response.content.decode()


def test_the_month_turns_at_midnight_utc(books, project):
    with time_machine.travel(datetime(2026, 12, 1, tzinfo=UTC) - timedelta(microseconds=1), tick=False):
        november = dashboard_read(project_ids=[project.pk], now=timezone.now())
    with time_machine.travel(datetime(2026, 12, 1, tzinfo=UTC), tick=False):
        december = dashboard_read(project_ids=[project.pk], now=timezone.now())

    assert november.billed.count == 4
    assert december.billed == Figure()
    assert december.billed_by_month["USD"][-2:] == [(november.month, D("1444.50")), (december.month, D(0))]
