import pytest

from billing_site.demo import DEMO_PASSWORD, DEMO_USERNAME, demo_load
from tests.browser.conftest import admin_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_demo_login_reaches_the_demo_project(page):
    demo = demo_load()

    admin_login(page, DEMO_USERNAME, DEMO_PASSWORD)
    page.get_by_role("link", name="Projects", exact=True).click()
    page.get_by_role("link", name=demo.project.name).click()

    assert page.locator("#id_name").input_value() == "Demo"
    assert page.locator(".field-public_id").inner_text().strip().endswith(demo.project.public_id)
