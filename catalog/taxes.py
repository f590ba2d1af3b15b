"""Tax rates and a customer's tax settings: the services that write them and the selectors that read
them. Which rate applies to which invoice line is the invoice maths' business (invoicing/taxes.py):
the charge's rates, else the plan's, else the customer's, else the project's defaults.

A rate's `percentage` and `inclusive` never change once it exists (issued invoices name it): to
change a rate, archive it and create another.
"""

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Project
from accounts.services import Actor, audit_record
from billing_site.errors import InvalidInput, Unprocessable
from billing_site.money import DecimalError, decimal_from_json
from catalog.models import TaxRate
from catalog.pricing import MAX_PERCENTAGE, PERCENTAGE_PLACES
from meters.staleness import drafts_stale_after_commit
from webhooks.services import event_record

TAX_RATE_EDITABLE = frozenset({"name", "jurisdiction", "is_default"})

# --- selectors ------------------------------------------------------------------------------------


def tax_rate_list(*, project: Project) -> QuerySet[TaxRate]:
    return TaxRate.objects.filter(project=project)


def tax_rates_default(project: Project) -> QuerySet[TaxRate]:
    """The project's default rates in use (not archived): what a line is taxed at when neither its
    charge, its plan nor its customer names rates."""
    return tax_rate_list(project=project).filter(is_default=True, archived_at__isnull=True)


def tax_rates_resolve(*, project: Project, references: Any, param: str) -> list[TaxRate]:
    """Rates named by ID (`txr_…`) or given as objects, each once, in the order given.

    One that is not of the project is 422 `not_found` (as every reference in a body is); an
    archived one is 422 `tax_rate_archived`: it may stay where it was set, but is set nowhere new.
    """
    if isinstance(references, str | dict) or not isinstance(references, Iterable):
        raise InvalidInput("A list of tax rate IDs (txr_…).", code="invalid_type", param=param)
    found: dict[int, TaxRate] = {}
    for index, reference in enumerate(references):
        at = f"{param}[{index}]"
        if isinstance(reference, TaxRate):
            rate = reference if reference.project_id == project.pk else None
        elif isinstance(reference, str):
            rate = tax_rate_list(project=project).filter(public_id=reference).first()
        else:
            raise InvalidInput("A tax rate's ID (txr_…).", code="invalid_type", param=at)
        if rate is None:
            raise Unprocessable(f"No such tax rate: '{reference}'.", code="not_found", param=at)
        if rate.archived_at is not None:
            raise Unprocessable(
                f"The tax rate {rate.public_id} is archived.", code="tax_rate_archived", param=at
            )
        found.setdefault(rate.pk, rate)
    return list(found.values())


# --- services -------------------------------------------------------------------------------------


def clean_percentage(value: Any, *, param: str = "percentage") -> Decimal:
    """0 to 100, with at most PERCENTAGE_PLACES decimals. A decimal string above 100 has the
    documented shape (the schema's pattern cannot bound it), so it is 422, not 400."""
    try:
        number = decimal_from_json(value, integer_digits=3, places=PERCENTAGE_PLACES)
    except DecimalError as error:
        raise InvalidInput(error.message, code=error.code, param=param) from None
    if number > MAX_PERCENTAGE:
        raise Unprocessable("A percentage is from 0 to 100.", code="percentage_out_of_range", param=param)
    return number


def _clean_text(fields: dict[str, Any]) -> None:
    if "name" in fields and not str(fields["name"]).strip():
        raise Unprocessable(
            "A tax rate needs a name (not only spaces or control characters).", code="blank", param="name"
        )


def tax_rate_create(
    *,
    project: Project,
    name: str,
    percentage: Any,
    inclusive: bool = False,
    jurisdiction: str = "",
    is_default: bool = False,
    actor: Actor,
) -> TaxRate:
    """A tax rate; `percentage` and `inclusive` are fixed from now on."""
    _clean_text({"name": name})
    cleaned = clean_percentage(percentage)
    with transaction.atomic():
        rate = TaxRate.objects.create(
            project=project,
            name=name,
            percentage=cleaned,
            inclusive=inclusive,
            jurisdiction=jurisdiction,
            is_default=is_default,
        )
        audit_record(project=project, actor=actor, action="tax_rate.created", target=rate)
        event_record(project=project, type="tax_rate.created", obj=rate)
        if is_default:
            drafts_stale_after_commit(project_id=project.pk)
    return rate


def tax_rate_update(*, tax_rate: TaxRate, changes: dict[str, Any], actor: Actor) -> TaxRate:
    """Rename it, change its jurisdiction, make it a default or not. A change to nothing records
    nothing. An archived rate does not change."""
    unknown = set(changes) - TAX_RATE_EDITABLE
    if unknown:
        raise InvalidInput(
            f"Only {', '.join(sorted(TAX_RATE_EDITABLE))} change; create another rate instead.",
            code="unknown_field",
            param=sorted(unknown)[0],
        )
    _clean_text(changes)
    with transaction.atomic():
        rate = TaxRate.objects.select_for_update().get(pk=tax_rate.pk)
        if rate.archived_at is not None:
            raise Unprocessable("An archived tax rate does not change.", code="tax_rate_archived")
        audit = {
            name: [str(getattr(rate, name)), str(value)]
            for name, value in changes.items()
            if getattr(rate, name) != value
        }
        if not audit:
            return rate
        for name, value in changes.items():
            setattr(rate, name, value)
        rate.save(update_fields=list(audit))
        audit_record(project=rate.project, actor=actor, action="tax_rate.updated", target=rate, changes=audit)
        event_record(project=rate.project, type="tax_rate.updated", obj=rate)
        drafts_stale_after_commit(project_id=rate.project_id)
    return rate


def tax_rate_archive(*, tax_rate: TaxRate, actor: Actor) -> TaxRate:
    """Set nowhere new from now on (nor a default); where it is set, it stays. Archiving it again
    changes nothing and records nothing."""
    with transaction.atomic():
        if TaxRate.objects.filter(pk=tax_rate.pk, archived_at__isnull=True).update(
            archived_at=timezone.now()
        ):
            tax_rate.refresh_from_db(fields=["archived_at"])
            audit_record(project=tax_rate.project, actor=actor, action="tax_rate.archived", target=tax_rate)
            event_record(project=tax_rate.project, type="tax_rate.archived", obj=tax_rate)
            drafts_stale_after_commit(project_id=tax_rate.project_id)
    tax_rate.refresh_from_db(fields=["archived_at"])
    return tax_rate
