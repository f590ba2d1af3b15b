from django.apps import AppConfig


class CatalogConfig(AppConfig):
    """Products, plans and their charges, customers, contracts."""

    name = "catalog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalog.api.serializers import ContractSerializer, CustomerSerializer, PlanSerializer
        from catalog.models import Contract, Customer, Plan
        from webhooks import payloads

        payloads.register(Customer, lambda customer: CustomerSerializer(customer).data)
        payloads.register(Plan, lambda plan: PlanSerializer(plan).data)
        payloads.register(Contract, lambda contract: ContractSerializer(contract).data)
