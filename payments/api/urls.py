from django.urls import re_path

from payments.api import payment_methods

# `{id}`: a customer's ID or external_id, which may hold any character but a slash.
CUSTOMER = r"^customers/(?P<id>[^/]+)/payment-methods"
urlpatterns = [
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
]
