from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from payments.api import payment_methods
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
# `{id}`: a customer's ID or external_id, which may hold any character but a slash.
CUSTOMER = r"^customers/(?P<id>[^/]+)/payment-methods"
urlpatterns = [
    path("balance", BalanceView.as_view(), name="balance"),
    path("invoices/<str:id>/payments", InvoicePaymentView.as_view(), name="invoice-payments"),
    path("credit-notes/<str:id>/refund", CreditNoteRefundView.as_view(), name="credit-note-refund"),
    re_path(rf"{CUSTOMER}$", payment_methods.PaymentMethodListView.as_view(), name="payment-method-list"),
    re_path(
        rf"{CUSTOMER}/setup-intent$", payment_methods.SetupIntentView.as_view(), name="payment-method-setup"
    ),
    re_path(
        rf"{CUSTOMER}/(?P<payment_method>[A-Za-z0-9_]+)$",
        payment_methods.PaymentMethodView.as_view(),
        name="payment-method-detail",
    ),
    re_path(
        rf"{CUSTOMER}/(?P<payment_method>[A-Za-z0-9_]+)/default$",
        payment_methods.PaymentMethodDefaultView.as_view(),
        name="payment-method-default",
    ),
    *router.urls,
]
