"""`{% billing_dashboard %}`: the admin index's dashboard (templates/admin/index.html).

The figures of billing_site.dashboard for the staff user's projects (every project for a
superuser), formatted with babel and each linking to the list it counts; two bar charts in plain
HTML and CSS; and the unmatched usage panel (meters.admin). Amounts are written in the locale the
user's projects share, or en_US when they differ.
"""

from datetime import date
from decimal import Decimal
from urllib.parse import urlencode

from babel.dates import format_skeleton
from django import template
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from accounts.models import Project
from billing_site import formats
from billing_site.admin import roles_for
from billing_site.admin_display import DEFAULT_LOCALE
from billing_site.dashboard import Dashboard, Figure, dashboard_read
from billing_site.months import month_param
from invoicing.models import ISSUED_STATUSES
from meters.admin import unmatched_usage_panel

register = template.Library()


@register.simple_tag(takes_context=True)
def billing_dashboard(context: template.Context) -> SafeString:
    projects = dashboard_projects(context["request"])
    if not projects:
        return SafeString("")
    return dashboard_html(projects, dashboard_read(project_ids=[p.pk for p in projects], now=timezone.now()))


def dashboard_projects(request: HttpRequest) -> list[Project]:
    """The projects the user is a member of (every project for a superuser), by name."""
    projects = Project.objects.order_by("name")
    if not request.user.is_superuser:
        projects = projects.filter(pk__in=roles_for(request))
    return list(projects)


def dashboard_locale(projects: list[Project]) -> str:
    """The locale the projects share; en_US when they differ."""
    locales = {project.locale for project in projects}
    return locales.pop() if len(locales) == 1 else DEFAULT_LOCALE


def _billed_url(month: date) -> str:
    """The invoices a month's billed figure counts: issued that month and not void since."""
    query = {"issued_month": month_param(month), "status__in": ",".join(sorted(ISSUED_STATUSES))}
    return f"{reverse('admin:invoicing_invoice_changelist')}?{urlencode(query)}"


def dashboard_html(projects: list[Project], data: Dashboard) -> SafeString:
    locale = dashboard_locale(projects)
    month = month_param(data.month)
    invoices = reverse("admin:invoicing_invoice_changelist")
    payments = reverse("admin:payments_payment_changelist")
    figures = [
        _figure("Billed", data.billed, "issued invoice", _billed_url(data.month), locale),
        _figure(
            "Collected",
            data.collected,
            "payment",
            f"{payments}?{urlencode({'paid_month': month, 'status__exact': 'succeeded'})}",
            locale,
        ),
        _figure("Open", data.open, "open invoice", f"{invoices}?status__exact=open", locale),
        _figure("Overdue", data.overdue, "overdue invoice", f"{invoices}?overdue=yes", locale),
        _figure(
            "Pending review",
            Figure(count=data.review),
            "invoice",
            reverse("admin:invoicing_pendingreviewinvoice_changelist"),
            locale,
        ),
        _figure(
            "Failing webhook endpoints",
            Figure(count=data.failing_endpoints),
            "endpoint",
            reverse("admin:webhooks_webhookendpoint_changelist") + "?health=failing",
            locale,
        ),
    ]
    return render_to_string(
        "admin/dashboard/dashboard.html",
        {
            "month": format_skeleton("yMMMM", data.month, locale=locale),
            "figures": figures,
            "billed_charts": _billed_charts(data, invoices, locale),
            "usage": _usage_bars(data, several_projects=len(projects) > 1, locale=locale),
            "unmatched": unmatched_usage_panel(projects),
        },
    )


def _count(count: int, noun: str, locale: str) -> str:
    return f"{formats.quantity(Decimal(count), locale)} {noun}{'' if count == 1 else 's'}"


def _figure(title: str, figure: Figure, noun: str, url: str, locale: str) -> dict:
    return {
        "title": title,
        "count": _count(figure.count, noun, locale),
        "amounts": [formats.money(amount, currency, locale) for currency, amount in figure.amounts.items()],
        "url": url,
    }


def _percent(value: Decimal, highest: Decimal) -> int:
    """A bar's length: its share of the highest bar, in whole percent (rounded down)."""
    return int(max(value, Decimal(0)) * 100 / highest) if highest > 0 else 0


def _billed_charts(data: Dashboard, invoices: str, locale: str) -> list[dict]:
    """One chart per currency: what was billed in it each of the last 12 months."""
    charts = []
    for currency, months in data.billed_by_month.items():
        highest = max(amount for _, amount in months)
        bars = [
            {
                "label": format_skeleton("yMMM", month, locale=locale),
                "short": format_skeleton("MMM", month, locale=locale),
                "amount": formats.money(amount, currency, locale),
                "percent": _percent(amount, highest),
                "url": _billed_url(month),
            }
            for month, amount in months
        ]
        charts.append({"currency": currency, "bars": bars})
    return charts


def _usage_bars(data: Dashboard, *, several_projects: bool, locale: str) -> list[dict]:
    """A bar per meter, linking to its matched events of the month. Only meters of the same unit
    are comparable: each bar is its share of the highest figure of its unit (event counts form the
    unit "events")."""
    totals = data.usage
    units = ["events" if total.events_only else total.meter.unit for total in totals]
    highest: dict[str, Decimal] = {}
    for total, unit in zip(totals, units, strict=True):
        highest[unit] = max(highest.get(unit, Decimal(0)), total.quantity)
    explorer = reverse("admin:meters_usageevent_changelist")
    since = f"{data.month:%Y-%m-%d}"
    return [
        {
            "meter": total.meter,
            "project": total.meter.project.name if several_projects else "",
            "quantity": formats.quantity(total.quantity, locale),
            "unit": unit,
            "events_only": total.events_only,
            "percent": _percent(total.quantity, highest[unit]),
            "url": f"{explorer}?{urlencode({'meter': total.meter.pk, 'status': 'matched', 'from': since})}",
        }
        for total, unit in zip(totals, units, strict=True)
    ]
