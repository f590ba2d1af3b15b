from django.urls import path
from rest_framework.routers import SimpleRouter

from payments.api.views import (
    BalanceView,
    CreditNoteRefundView,
    InvoicePaymentView,
    PaymentViewSet,
    PayoutViewSet,
)

router = SimpleRouter(trailing_slash=False)
router.register("payments", PaymentViewSet, basename="payment")
router.register("payouts", PayoutViewSet, basename="payout")
urlpatterns = [
    path("balance", BalanceView.as_view(), name="balance"),
    path("invoices/<str:id>/payments", InvoicePaymentView.as_view(), name="invoice-payments"),
    path("credit-notes/<str:id>/refund", CreditNoteRefundView.as_view(), name="credit-note-refund"),
    *router.urls,
]
