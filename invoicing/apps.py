from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    """Invoices, lines, credit notes, prepaid credits, the rating engine, period close and the
    review queue."""

    name = "invoicing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from invoicing.api.credits import credit_grant_payload, wallet_payload
        from invoicing.api.serializers import CreditNoteSerializer, invoice_payload, invoice_payload_issued
        from invoicing.models import CreditGrant, CreditNote, Invoice, Wallet
        from webhooks import payloads

        payloads.register(Invoice, invoice_payload, issued=invoice_payload_issued)
        payloads.register(CreditNote, lambda note: CreditNoteSerializer(note).data)
        payloads.register(CreditGrant, credit_grant_payload)
        payloads.register(Wallet, wallet_payload)
