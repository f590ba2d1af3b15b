from django.apps import AppConfig


class CatalogConfig(AppConfig):
    """Products, plans and their charges, customers, contracts, tax rates, coupons."""

    name = "catalog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalog.api.coupons import CouponRedemptionSerializer, CouponSerializer
        from catalog.api.serializers import ContractSerializer, CustomerSerializer, PlanSerializer
        from catalog.api.taxes import TaxRateSerializer
        from catalog.models import Contract, Coupon, CouponRedemption, Customer, Plan, TaxRate
        from webhooks import payloads

        payloads.register(Customer, lambda customer: CustomerSerializer(customer).data)
        payloads.register(Plan, lambda plan: PlanSerializer(plan).data)
        payloads.register(Contract, lambda contract: ContractSerializer(contract).data)
        payloads.register(TaxRate, lambda rate: TaxRateSerializer(rate).data)
        payloads.register(Coupon, lambda coupon: CouponSerializer(coupon).data)
        payloads.register(CouponRedemption, lambda redemption: CouponRedemptionSerializer(redemption).data)
