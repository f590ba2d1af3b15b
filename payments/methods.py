"""Saved payment methods: a customer's instruments at Stripe (cards, SEPA debits), one default.

Stripe is asked first and the row is written once it has answered, so a refusal (a declined card,
an unknown ID) stores nothing and no database lock is held while Stripe is called. Each write then
locks the customer's row: writes for one customer (an attach beside a set-default, a webhook beside
an API call) take turns, so "the first method becomes the default" holds and the one-default
constraint never trips. When Billable changes the default, Stripe's customer default
(`invoice_settings.default_payment_method`) is set to match, so Stripe's dashboard shows ours.

Rows are never deleted (payments point at them): a removed method is detached at Stripe and keeps
its row, with `detached_at` set.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import PaymentProcessor, Project
from accounts.services import Actor, audit_record
from billing_site.errors import Conflict, InvalidInput, InvalidState, Unprocessable
from billing_site.validators import pattern_regex
from catalog.models import Customer
from payments import stripe_processor
from payments.models import PaymentMethod
from payments.selectors import default_payment_method, payment_method_list
from payments.stripe_processor import ProcessorError
from webhooks.services import event_record

PAYMENT_METHOD_ID_PATTERN = r"^pm_[A-Za-z0-9_]+$"
PAYMENT_METHOD_ID_MAX_LENGTH = 255


def _refusal(error: ProcessorError) -> Unprocessable:
    """Stripe's refusal (card_declined, …) or absence (processor_unavailable) as a 422 with its code."""
    return Unprocessable(error.message, code=error.code)


def _stripe_ready(project: Project) -> None:
    # A missing secret key is refused by stripe_processor.client, with the same code.
    if project.payment_processor != PaymentProcessor.STRIPE:
        raise Unprocessable(
            "This project collects through its own processor; payment methods are saved through Stripe.",
            code="processor_not_configured",
        )


def _stripe_default_set(customer: Customer, processor_id: str) -> None:
    """Stripe's default method for the customer: `processor_id`, or none for ""."""
    stripe_processor.call(
        customer.project,
        lambda client: client.v1.customers.update(
            customer.processor_customer_id,
            params={"invoice_settings": {"default_payment_method": processor_id}},
        ),
    )


def _lock(*customer_ids: int) -> None:
    """Lock the customers' rows until the transaction ends, always in the same order."""
    list(Customer.objects.select_for_update().filter(pk__in=customer_ids).order_by("pk").values("pk"))


def _described(stripe_pm: dict) -> dict:
    """The row's fields as Stripe's PaymentMethod object describes the instrument."""
    card = stripe_pm.get("card") or {}
    sepa_debit = stripe_pm.get("sepa_debit") or {}
    return {
        "type": stripe_pm["type"],
        "brand": card.get("brand") or "",
        "last4": card.get("last4") or "",
        "exp_month": card.get("exp_month"),
        "exp_year": card.get("exp_year"),
        "iban_last4": sepa_debit.get("last4") or "",
    }


def _record(method: PaymentMethod, *, action: str, actor: Actor, changes: dict | None = None) -> None:
    audit_record(project=method.project, actor=actor, action=action, target=method, changes=changes)
    event_record(project=method.project, type=action, obj=method)


def _default_move(method: PaymentMethod, *, to: bool, actor: Actor) -> None:
    method.is_default = to
    method.save(update_fields=["is_default"])
    _record(method, action="payment_method.updated", actor=actor, changes={"default": [not to, to]})


def _save(*, customer: Customer, stripe_pm: dict, actor: Actor) -> PaymentMethod:
    """The row of a method Stripe has attached to the customer: created, or revived if it was
    detached. The customer's only attached method is its default. Saving it again changes nothing."""
    project = customer.project
    processor_id = stripe_pm["id"]
    try:
        with transaction.atomic():
            found = PaymentMethod.objects.filter(project=project, processor_id=processor_id).first()
            _lock(customer.pk, *([found.customer_id] if found else []))
            method = PaymentMethod.objects.filter(project=project, processor_id=processor_id).first()
            if method is not None and method.detached_at is None:
                if method.customer_id == customer.pk:
                    return method
                # Stripe moved it to this customer (we missed the detaching): the other loses it.
                _release(method, actor=actor)
            method = method or PaymentMethod(project=project, processor_id=processor_id)
            method.customer, method.detached_at = customer, None
            for name, value in _described(stripe_pm).items():
                setattr(method, name, value)
            method.is_default = not payment_method_list(customer=customer).exists()
            method.save()
            _record(method, action="payment_method.attached", actor=actor)
    except IntegrityError:
        raise Conflict(
            "This payment method was saved by another request at the same time; retry.",
            code="payment_method_changed_concurrently",
        ) from None
    return method


def _release(method: PaymentMethod, *, actor: Actor) -> None:
    """Mark the method detached; if it was the default, the most recent other attached method
    becomes the default. Runs under the lock of the method's customer."""
    was_default = method.is_default
    method.detached_at, method.is_default = timezone.now(), False
    method.save(update_fields=["detached_at", "is_default"])  # first: the successor may then be default
    _record(method, action="payment_method.detached", actor=actor)
    successor = payment_method_list(customer=method.customer).first() if was_default else None
    if successor is not None:
        _default_move(successor, to=True, actor=actor)


def _check_attached(method: PaymentMethod) -> None:
    if method.detached_at is not None:
        raise InvalidState(
            "This payment method was removed; attach it again first.",
            current="detached",
            requested="default",
            code="payment_method_detached",
        )


def setup_intent_create(*, customer: Customer, actor: Actor) -> str:
    """A Stripe SetupIntent for the customer (its Stripe customer created on first use), and its
    client secret, with which Stripe.js collects a card or a SEPA mandate. Saved for off-session
    use: Billable charges the method when an invoice is issued, without the customer present."""
    project = customer.project
    _stripe_ready(project)
    if not project.stripe_publishable_key:
        raise Unprocessable(
            "The project has no Stripe publishable key, which Stripe.js needs; set it in the project's "
            "settings.",
            code="processor_not_configured",
        )
    try:
        stripe_customer = stripe_processor.customer_ensure(customer)
        intent = stripe_processor.call(
            project,
            lambda client: client.v1.setup_intents.create(
                params={
                    "customer": stripe_customer,
                    "usage": "off_session",
                    "metadata": {"billable_customer": customer.public_id},
                }
            ),
        )
    except ProcessorError as error:
        raise _refusal(error) from error
    with transaction.atomic():
        audit_record(
            project=project,
            actor=actor,
            action="payment_method.setup_intent_created",
            target=customer,
            changes={"setup_intent": intent.id},
        )
    return intent.client_secret


def payment_method_attach(*, customer: Customer, payment_method_id: str, actor: Actor) -> PaymentMethod:
    """Save a Stripe payment method (`pm_…`, from Stripe.js) for the customer: attached at Stripe
    to the customer's Stripe customer, stored as Stripe describes it. The customer's first method
    becomes its default. Attaching one that is already saved returns it; one that was detached is
    attached again."""
    if (
        not isinstance(payment_method_id, str)
        or len(payment_method_id) > PAYMENT_METHOD_ID_MAX_LENGTH
        or not pattern_regex(PAYMENT_METHOD_ID_PATTERN).search(payment_method_id)
    ):
        raise InvalidInput(
            "A Stripe payment method ID starts with pm_ (pm_1NvYw2…).",
            code="invalid_payment_method_id",
            param="payment_method_id",
        )
    project = customer.project
    _stripe_ready(project)
    attached = PaymentMethod.objects.filter(
        project=project, processor_id=payment_method_id, detached_at__isnull=True
    )
    if attached.exclude(customer=customer).exists():
        raise Unprocessable(
            "This payment method is saved for another customer; remove it there first.",
            code="payment_method_in_use",
            param="payment_method_id",
        )
    # The customer's first method becomes the default (decided again under the lock, in _save).
    first = not payment_method_list(customer=customer).exists()
    try:
        stripe_customer = stripe_processor.customer_ensure(customer)
        stripe_pm = stripe_processor.call(
            project,
            lambda client: client.v1.payment_methods.attach(
                payment_method_id, params={"customer": stripe_customer}
            ),
        )
        if first:
            _stripe_default_set(customer, payment_method_id)
    except ProcessorError as error:
        if error.code == "resource_missing":
            raise Unprocessable(
                f"Stripe has no payment method '{payment_method_id}'.",
                code="unknown_payment_method",
                param="payment_method_id",
            ) from error
        raise _refusal(error) from error
    return _save(customer=customer, stripe_pm=stripe_processor.plain(stripe_pm), actor=actor)


def payment_method_set_default(*, payment_method: PaymentMethod, actor: Actor) -> PaymentMethod:
    """Make an attached method the customer's default, here and at Stripe; the previous default
    stops being one in the same transaction."""
    _check_attached(payment_method)
    customer = payment_method.customer
    _stripe_ready(customer.project)
    try:
        _stripe_default_set(customer, payment_method.processor_id)
    except ProcessorError as error:
        raise _refusal(error) from error
    with transaction.atomic():
        _lock(customer.pk)
        method = PaymentMethod.objects.get(pk=payment_method.pk)
        _check_attached(method)  # detached while Stripe was asked
        if not method.is_default:
            previous = default_payment_method(customer)
            if previous is not None:  # cleared first: never two defaults, even for a moment
                _default_move(previous, to=False, actor=actor)
            _default_move(method, to=True, actor=actor)
    return method


def payment_method_detach(*, payment_method: PaymentMethod, actor: Actor) -> PaymentMethod:
    """Remove a saved method: detached at Stripe, kept here with `detached_at` set. If it was the
    default, the most recent other attached method becomes the default (at Stripe too). Removing
    a removed method does nothing."""
    if payment_method.detached_at is not None:
        return payment_method
    customer = payment_method.customer
    _stripe_ready(customer.project)
    try:
        if payment_method.is_default:
            successor = payment_method_list(customer=customer).exclude(pk=payment_method.pk).first()
            _stripe_default_set(customer, successor.processor_id if successor else "")
        stripe_processor.call(
            customer.project, lambda client: client.v1.payment_methods.detach(payment_method.processor_id)
        )
    except ProcessorError as error:
        raise _refusal(error) from error
    with transaction.atomic():
        _lock(customer.pk)
        method = PaymentMethod.objects.get(pk=payment_method.pk)
        if method.detached_at is None:
            _release(method, actor=actor)
    return method


def payment_method_sync(*, project: Project, stripe_pm: dict, attached: bool) -> PaymentMethod | None:
    """What Stripe's `payment_method.attached` / `payment_method.detached` webhook reports, when
    the method was attached or detached outside Billable (a SetupIntent confirmed by Stripe.js, the
    Stripe dashboard). Stripe is not asked anything.

    An attached method is saved for the project's customer with that Stripe customer ID (None if
    there is none); a detached one is marked detached if it is saved (else None). Repeating an
    event changes nothing, and neither do the events Stripe sends for Billable's own changes.
    """
    if attached:
        stripe_customer = stripe_pm.get("customer")
        customer = (
            Customer.objects.filter(project=project, processor_customer_id=stripe_customer)
            .order_by("pk")
            .first()
            if stripe_customer
            else None
        )
        return None if customer is None else _save(customer=customer, stripe_pm=stripe_pm, actor=None)
    with transaction.atomic():
        found = PaymentMethod.objects.filter(project=project, processor_id=stripe_pm["id"]).first()
        if found is None:
            return None
        _lock(found.customer_id)
        method = PaymentMethod.objects.get(pk=found.pk)
        if method.detached_at is None:
            _release(method, actor=None)
    return method
