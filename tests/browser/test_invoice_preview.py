import pytest

from accounts.models import Project, Role
from tests.accounts.factories import PASSWORD, MembershipFactory, ProjectFactory
from tests.browser.conftest import admin_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_invoice_preview_follows_the_form_as_the_owner_types(page):
    project = ProjectFactory(name="Acme")
    owner = MembershipFactory(project=project, role=Role.OWNER).user

    admin_login(page, owner.username, PASSWORD)
    page.goto(f"/admin/accounts/project/{project.pk}/change/")
    preview = page.frame_locator("#invoice-preview")
    preview.get_by_text("Example Customer Ltd").wait_for()
    page.fill("#id_company_name", "Acme Europe GmbH")
    page.fill("#id_accent_color", "#ff0066")

    preview.get_by_text("Acme Europe GmbH", exact=True).wait_for()
    assert "accent_color=%23ff0066" in page.get_attribute("#invoice-preview-pdf", "href")
    assert Project.objects.get(pk=project.pk).company_name == ""  # previewed, not saved
