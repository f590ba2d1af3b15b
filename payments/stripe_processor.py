"""Stripe, through the official `stripe` library and the project's own keys.

Everything Billable asks Stripe goes through here, so the rest of the app never sees the library:
callers get plain values (`ChargeOutcome`) or a `ProcessorError`. Every request that moves money
carries an idempotency key derived from our own record (an invoice and attempt, a refund, a
payout), so a request repeated after a timeout or a crash is answered by Stripe with the first
result instead of moving money twice. `settings.STRIPE_API_BASE` points the client at a local
fake (localstripe) in tests.
"""

import datetime
from dataclasses import dataclass
from decimal import Decimal

import stripe
from django.conf import settings

from accounts.models import Project
from billing_site.errors import Unprocessable
from billing_site.money import from_minor_units, to_minor_units
from catalog.models import Customer


class ProcessorError(Exception):
    """Stripe refused or could not be reached. `code` is Stripe's (card_declined, …) or ours."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChargeOutcome:
    status: str  # succeeded, processing or failed
    reference: str = ""  # the PaymentIntent (pi_…)
    charge_reference: str = ""
    method: str = ""
    fee: Decimal = Decimal(0)
    available_at: datetime.datetime | None = None
    failure_code: str = ""
    failure_message: str = ""


def client(project: Project) -> stripe.StripeClient:
    if not project.stripe_secret_key:
        raise Unprocessable(
            "The project has no Stripe secret key; set it in the project's settings.",
            code="processor_not_configured",
        )
    return stripe.StripeClient(
        project.stripe_secret_key,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
        max_network_retries=2,
    )


def _error(exc: stripe.StripeError) -> ProcessorError:
    if isinstance(exc, stripe.APIConnectionError):
        return ProcessorError("Stripe could not be reached; try again.", code="processor_unavailable")
    message = exc.user_message or str(exc) or "Stripe refused the request."
    # Stripe names a 404 resource_missing; localstripe sends no code with it.
    fallback = "resource_missing" if exc.http_status == 404 else "processor_error"
    return ProcessorError(message, code=exc.code or fallback)


def customer_ensure(customer: Customer) -> str:
    """The customer's Stripe customer ID, creating the Stripe customer the first time it is needed.

    The idempotency key makes two racing first uses create one Stripe customer; the row is only
    filled if still empty, so the first writer wins and everyone reads the same ID.
    """
    if customer.processor_customer_id:
        return customer.processor_customer_id
    params = {"metadata": {"billable_customer": customer.public_id}}
    if customer.name:
        params["name"] = customer.name
    if customer.email:
        params["email"] = customer.email
    try:
        created = client(customer.project).v1.customers.create(
            params=params, options={"idempotency_key": f"billable:customer:{customer.public_id}"}
        )
    except stripe.StripeError as exc:
        raise _error(exc) from exc
    Customer.objects.filter(pk=customer.pk, processor_customer_id="").update(processor_customer_id=created.id)
    customer.refresh_from_db(fields=["processor_customer_id"])
    return customer.processor_customer_id


def call(project: Project, operation, *args, **kwargs):
    """`operation(client, *args, **kwargs)` with Stripe's errors as ProcessorError."""
    try:
        return operation(client(project), *args, **kwargs)
    except stripe.StripeError as exc:
        raise _error(exc) from exc


def plain(obj) -> dict:
    """A Stripe object as a plain dict (the library's objects are not dicts)."""
    return obj if isinstance(obj, dict) else obj.to_dict()


def _available_at(stripe_client: stripe.StripeClient, charge_id: str) -> tuple[Decimal, str, int | None]:
    charge = plain(stripe_client.v1.charges.retrieve(charge_id))
    method = ""
    details = charge.get("payment_method_details")
    if details:
        method = details.get("type", "")
    if not charge.get("balance_transaction"):
        return Decimal(0), method, None
    transaction = stripe_client.v1.balance_transactions.retrieve(charge["balance_transaction"])
    return transaction["fee"], method, transaction["available_on"]


def charge(
    *,
    project: Project,
    customer_id: str,
    payment_method_id: str,
    amount: Decimal,
    currency: str,
    idempotency_key: str,
    metadata: dict[str, str],
) -> ChargeOutcome:
    """Charge a saved payment method off-session (the customer is not there to authenticate)."""
    stripe_client = client(project)
    try:
        intent = stripe_client.v1.payment_intents.create(
            params={
                "amount": to_minor_units(amount, currency),
                "currency": currency.lower(),
                "customer": customer_id,
                "payment_method": payment_method_id,
                "off_session": True,
                "confirm": True,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
    except stripe.CardError as exc:
        intent = plain((exc.error and exc.error.payment_intent) or {})
        return ChargeOutcome(
            status="failed",
            reference=intent.get("id", ""),
            failure_code=exc.code or "card_declined",
            failure_message=exc.user_message or str(exc),
        )
    except stripe.StripeError as exc:
        raise _error(exc) from exc
    return intent_outcome(project, intent)


def intent_outcome(project: Project, intent) -> ChargeOutcome:
    """What a PaymentIntent (as Stripe returned it, or in a webhook) means for our payment."""
    intent = plain(intent)
    status = intent["status"]
    charge_id = intent.get("latest_charge") or ""
    if isinstance(charge_id, dict):
        charge_id = charge_id["id"]
    if status == "succeeded":
        fee, method, available_on = call(project, _available_at, charge_id)
        currency = intent["currency"].upper()
        return ChargeOutcome(
            status="succeeded",
            reference=intent["id"],
            charge_reference=charge_id,
            method=method,
            fee=from_minor_units(fee, currency),
            available_at=None
            if available_on is None
            else datetime.datetime.fromtimestamp(available_on, tz=datetime.UTC),
        )
    if status == "processing":
        return ChargeOutcome(status="processing", reference=intent["id"], charge_reference=charge_id)
    error = intent.get("last_payment_error") or {}
    if status == "requires_action":
        error = {
            "code": "authentication_required",
            "message": "The bank asks the customer to authenticate this payment.",
        }
    return ChargeOutcome(
        status="failed",
        reference=intent["id"],
        charge_reference=charge_id,
        failure_code=error.get("code") or "payment_failed",
        failure_message=error.get("message") or f"The payment is {status}.",
    )
