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
