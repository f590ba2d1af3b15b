from django.urls import re_path
from rest_framework.routers import SimpleRouter

from catalog.api import coupons, taxes, views

router = SimpleRouter(trailing_slash=False)
router.register("products", views.ProductViewSet, basename="product")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("contracts", views.ContractViewSet, basename="contract")
router.register("tax-rates", taxes.TaxRateViewSet, basename="tax-rate")
router.register("coupons", coupons.CouponViewSet, basename="coupon")
# `{id}`: a customer's ID or external_id, which may hold any character but a slash.
CUSTOMER_COUPONS = r"^customers/(?P<id>[^/]+)/coupons"
urlpatterns = [
    re_path(rf"{CUSTOMER_COUPONS}$", coupons.CustomerCouponListView.as_view(), name="customer-coupon-list"),
    re_path(
        rf"{CUSTOMER_COUPONS}/(?P<redemption>[A-Za-z0-9_]+)$",
        coupons.CustomerCouponView.as_view(),
        name="customer-coupon-detail",
    ),
    *router.urls,
]
