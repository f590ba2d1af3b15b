from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from invoicing.api.credits import CreditGrantViewSet, CustomerCreditsView, CustomerWalletView
from invoicing.api.views import CreditNoteViewSet, InvoicePreviewView, InvoiceViewSet

router = SimpleRouter(trailing_slash=False)
router.register("invoices", InvoiceViewSet, basename="invoice")
router.register("credit-notes", CreditNoteViewSet, basename="credit-note")
router.register("credit-grants", CreditGrantViewSet, basename="credit-grant")
# `{id}`: a customer's ID or external_id, which may hold any character but a slash.
CUSTOMER_CREDITS = r"^customers/(?P<id>[^/]+)/credits"
urlpatterns = [
    path("invoices/preview", InvoicePreviewView.as_view(), name="invoice-preview"),
    re_path(rf"{CUSTOMER_CREDITS}$", CustomerCreditsView.as_view(), name="customer-credits"),
    re_path(
        rf"{CUSTOMER_CREDITS}/(?P<currency>[A-Za-z0-9]+)$",
        CustomerWalletView.as_view(),
        name="customer-wallet",
    ),
    *router.urls,
]
