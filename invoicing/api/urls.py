from django.urls import path
from rest_framework.routers import SimpleRouter

from invoicing.api.views import CreditNoteViewSet, InvoicePreviewView, InvoiceViewSet

router = SimpleRouter(trailing_slash=False)
router.register("invoices", InvoiceViewSet, basename="invoice")
router.register("credit-notes", CreditNoteViewSet, basename="credit-note")
urlpatterns = [path("invoices/preview", InvoicePreviewView.as_view(), name="invoice-preview"), *router.urls]
