import factory
from django.contrib.auth import get_user_model

from accounts.models import ALL_SCOPES, ApiKey, Membership, Project, Role
from accounts.services import api_key_create

PASSWORD = "correct horse battery"


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    currency = "USD"
    timezone = "UTC"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    is_staff = True
    password = factory.django.Password(PASSWORD)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.OWNER


def make_api_key(project: Project, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    """An API key through the real service (the secret exists only at creation)."""
    return api_key_create(project=project, name="test key", scopes=scopes or list(ALL_SCOPES), actor=None)


def project_admin_form(project: Project, **changes) -> dict:
    """The project's change form in the admin as posted with its current values, then `changes`."""
    data = {
        "name": project.name, "currency": project.currency, "timezone": project.timezone,
        "invoice_delivery": project.invoice_delivery, "grace_period_hours": project.grace_period_hours,
        "payment_terms_days": project.payment_terms_days,
        "invoice_number_prefix": project.invoice_number_prefix, "locale": project.locale,
        "accent_color": project.accent_color, "payment_processor": project.payment_processor,
        "payout_delay_hours": project.payout_delay_hours,
        "api_rate_limit_per_minute": project.api_rate_limit_per_minute,
        "ingest_rate_limit_per_minute": project.ingest_rate_limit_per_minute,
        "unmatched_usage": project.unmatched_usage,
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }  # fmt: skip
    if project.email_invoices:
        data["email_invoices"] = "on"
    data.update(changes)
    return data
