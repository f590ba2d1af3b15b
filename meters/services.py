from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, ProtectedError, Q, QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import Project, UnmatchedUsage
from accounts.services import Actor, audit_record
from billing_site.errors import Conflict, InvalidInput, Unprocessable
from billing_site.ids import new_public_ids
from catalog.models import Customer
from catalog.pricing import ChargeKind
from meters import group_commit
from meters.aggregation import BUCKETABLE_AGGREGATIONS
from meters.ingestion import NOT_FOUND_REJECTIONS, ParsedEvent, Rejection, parse_event
from meters.matching import Lookup, Match, MeterRules, NamedSubscription
from meters.models import (
    MAX_ROUNDING_PRECISION,
    Aggregation,
    FilterOperator,
    Meter,
    UnmatchedReason,
    UsageEvent,
    WeightedInput,
)
from meters.staleness import drafts_mark_stale
from meters.storage import EventRow, Inserted, events_insert, rollup_add
from subscriptions.models import SubscriptionPhase
from webhooks.services import events_record

MAX_GROUP_BY = 5
MAX_PROPERTY_LENGTH = 100
_LIST_OPERATORS = {FilterOperator.IN, FilterOperator.NOT_IN}
_NUMERIC_OPERATORS = {FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE}
# Changing these changes what past usage adds up to.
AGGREGATION_FIELDS = frozenset(
    {"aggregation", "property", "filters", "bucket", "rounding", "rounding_precision", "weighted_input"}
)


def _clean_property_name(value: Any, *, param: str) -> str:
    """A property name as events carry it: any non-empty string (taken as is: " region" is a key of
    its own) of at most MAX_PROPERTY_LENGTH characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_PROPERTY_LENGTH:
        raise InvalidInput(
            f"A property name is a non-empty string of at most {MAX_PROPERTY_LENGTH} characters.",
            code="invalid_property",
            param=param,
        )
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def clean_filters(raw: Any) -> list[dict[str, Any]]:
    """Filters like [{"property": "region", "operator": "in", "values": ["eu"]},
    {"property": "gb", "operator": "gte", "value": 1}]: all must match."""
    if not isinstance(raw, list):
        raise InvalidInput("Filters are a list.", code="invalid_filters", param="filters")
    cleaned = []
    for index, item in enumerate(raw):
        at = f"filters[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput("Each filter is an object.", code="invalid_filter", param=at)
        name = _clean_property_name(item.get("property"), param=f"{at}.property")
        operator = item.get("operator")
        if operator not in FilterOperator.values:
            raise InvalidInput(
                f"Operator must be one of {', '.join(FilterOperator.values)}.",
                code="invalid_operator",
                param=f"{at}.operator",
            )
        if operator in _LIST_OPERATORS:
            values = item.get("values")
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str | int | float) for v in values)
            ):
                raise InvalidInput(
                    f"'{operator}' needs a non-empty list of values.",
                    code="invalid_filter_values",
                    param=f"{at}.values",
                )
            cleaned.append({"property": name, "operator": operator, "values": values})
            continue
        value = item.get("value")
        if operator in _NUMERIC_OPERATORS and not _is_number(value):
            raise InvalidInput(
                f"'{operator}' compares with a number.", code="invalid_filter_value", param=f"{at}.value"
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise InvalidInput(
                "A filter value is a string or a number.", code="invalid_filter_value", param=f"{at}.value"
            )
        cleaned.append({"property": name, "operator": operator, "value": value})
    return cleaned


def clean_group_by(raw: Any) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_GROUP_BY:
        raise InvalidInput(
            f"group_by is a list of at most {MAX_GROUP_BY} property names.",
            code="invalid_group_by",
            param="group_by",
        )
    names = [_clean_property_name(name, param=f"group_by[{i}]") for i, name in enumerate(raw)]
    if len(set(names)) != len(names):
        raise InvalidInput("group_by lists a property twice.", code="invalid_group_by", param="group_by")
    return names


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    cleaned = dict(fields)
    if "filters" in fields:
        cleaned["filters"] = clean_filters(fields["filters"])
    if "group_by" in fields:
        cleaned["group_by"] = clean_group_by(fields["group_by"])
    if fields.get("property"):
        cleaned["property"] = _clean_property_name(fields["property"], param="property")
    return cleaned


def check_meter_rules(meter: Meter) -> None:
    """The rules between a meter's fields (each field valid alone): 422 when they disagree."""
    if meter.aggregation == Aggregation.UNIQUE_COUNT and not meter.property:
        raise Unprocessable(
            "unique_count counts distinct values of a property: name it.",
            code="property_required",
            param="property",
        )
    if meter.bucket and meter.aggregation not in BUCKETABLE_AGGREGATIONS:
        raise Unprocessable(
            f"A {meter.aggregation} meter cannot be bucketed: it is already a time average.",
            code="bucket_not_supported",
            param="bucket",
        )
    if meter.weighted_input != WeightedInput.LEVEL and meter.aggregation != Aggregation.WEIGHTED_SUM:
        raise Unprocessable(
            "weighted_input applies to weighted_sum meters only.",
            code="weighted_input_not_supported",
            param="weighted_input",
        )
    if not isinstance(meter.rounding_precision, int) or not (
        0 <= meter.rounding_precision <= MAX_ROUNDING_PRECISION
    ):
        raise InvalidInput(
            f"rounding_precision is a whole number from 0 to {MAX_ROUNDING_PRECISION}.",
            code="invalid_rounding_precision",
            param="rounding_precision",
        )
    if meter.rounding_precision and not meter.rounding:
        raise Unprocessable(
            "rounding_precision needs a rounding (round, ceil or floor).",
            code="rounding_required",
            param="rounding_precision",
        )


def meter_create(
    *,
    project: Project,
    code: str,
    name: str = "",
    aggregation: str = Aggregation.SUM,
    unit: str = "",
    property: str = "",
    filters: list | None = None,
    group_by: list | None = None,
    whole_numbers_only: bool = False,
    allow_negative: bool = False,
    bucket: str | None = None,
    rounding: str | None = None,
    rounding_precision: int = 0,
    weighted_input: str = WeightedInput.LEVEL,
    actor: Actor,
) -> Meter:
    fields = _clean({"property": property, "filters": filters or [], "group_by": group_by or []})
    meter = Meter(
        project=project,
        code=code,
        name=name or code,
        unit=unit,
        aggregation=aggregation,
        whole_numbers_only=whole_numbers_only,
        allow_negative=allow_negative,
        bucket=bucket or None,
        rounding=rounding or None,
        rounding_precision=rounding_precision,
        weighted_input=weighted_input,
        **fields,
    )
    check_meter_rules(meter)
    try:
        with transaction.atomic():
            meter.save()
            audit_record(project=project, actor=actor, action="meter.created", target=meter)
    except IntegrityError:
        raise Conflict(
            f"A meter with code '{code}' already exists.", code="meter_code_taken", param="code"
        ) from None
    usage_rematch_enqueue(project=project, meter_codes=[meter.code])
    return meter


def meter_update(*, meter: Meter, changes: dict[str, Any], actor: Actor) -> Meter:
    """Change a meter. What it aggregates (aggregation, property, filters, bucket, rounding,
    weighted_input) is fixed once usage has been recorded for it, because that usage may already
    be billed; create a new meter instead."""
    changes = _clean(changes)
    try:
        return _meter_update(meter, changes, actor=actor)
    except IntegrityError:
        raise Conflict(
            f"A meter with code '{changes.get('code')}' already exists.",
            code="meter_code_taken",
            param="code",
        ) from None


def _meter_update(meter: Meter, changes: dict[str, Any], *, actor: Actor) -> Meter:
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        changed = {name: value for name, value in changes.items() if getattr(meter, name) != value}
        locked = sorted(AGGREGATION_FIELDS & set(changed))
        if locked and meter_has_usage(meter):
            raise Conflict(
                f"{', '.join(locked)} cannot change: usage was already recorded with this meter. "
                "Create a new meter and move the plans to it.",
                code="meter_in_use",
                param=locked[0],
            )
        for name, value in changed.items():
            setattr(meter, name, value)
        check_meter_rules(meter)
        meter.save()
        audit_record(
            project=meter.project,
            actor=actor,
            action="meter.updated",
            target=meter,
            changes={name: str(value) for name, value in changed.items()},
        )
    return meter


def meter_has_usage(meter: Meter) -> bool:
    """Whether any usage event was matched to this meter (an index probe: the meter leads the
    usage events' rating index)."""
    return UsageEvent.objects.filter(meter=meter).exists()


def meter_delete(*, meter: Meter, actor: Actor) -> None:
    """Delete a meter no charge prices and no usage names; otherwise archive it."""
    try:
        with transaction.atomic():
            audit_record(project=meter.project, actor=actor, action="meter.deleted", target=meter)
            meter.delete()
    except ProtectedError:
        raise Conflict(
            "This meter is in use and cannot be deleted; archive it instead.", code="in_use"
        ) from None


def meter_archive(*, meter: Meter, actor: Actor) -> Meter:
    with transaction.atomic():
        if Meter.objects.filter(pk=meter.pk, archived_at__isnull=True).update(archived_at=timezone.now()):
            audit_record(project=meter.project, actor=actor, action="meter.archived", target=meter)
    meter.refresh_from_db(fields=["archived_at"])
    return meter


# --- usage ------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """Per-event results in request order, and the counts."""

    results: list[dict[str, Any]]
    accepted: int = 0
    duplicates: int = 0
    unmatched: int = 0
    rejected: int = 0

    @property
    def all_rejected(self) -> bool:
        return self.rejected == len(self.results)


ACCEPTED, DUPLICATE, UNMATCHED, REJECTED = "accepted", "duplicate", "unmatched", "rejected"

_INFER_MESSAGES = {
    "missing_meter": "meter is required: it can be left out only when the customer's subscriptions "
    "price exactly one meter.",
    "ambiguous_meter": "meter is required: the customer's subscriptions price several meters.",
}
_UNMATCHED_MESSAGES = {
    UnmatchedReason.UNKNOWN_CUSTOMER: "No customer has this external_id (or ID) yet. The event is kept "
    "and billed once the customer exists.",
    UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER: "No customer has this processor_customer_id yet. The "
    "event is kept and billed once one has.",
    UnmatchedReason.UNKNOWN_METER: "No meter has this code yet. The event is kept and billed once the "
    "meter exists.",
    UnmatchedReason.NO_ACTIVE_SUBSCRIPTION: "No subscription of the customer prices this meter at the "
    "event's time. The event is kept and billed if one does later.",
}
# What a project whose unmatched_usage is "reject" answers instead of keeping the event.
_REFUSED_MESSAGES = {
    UnmatchedReason.UNKNOWN_CUSTOMER: "No customer has this external_id (or ID); this project refuses "
    "usage for unknown customers.",
    UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER: "No customer has this processor_customer_id; this project "
    "refuses usage for unknown customers.",
    UnmatchedReason.UNKNOWN_METER: "No meter has this code; this project refuses usage for unknown meters.",
}
# At most this many events are listed in a `usage.unmatched` event; `more` counts the others.
MAX_UNMATCHED_LISTED = 100


def _rejected(rejection: Rejection) -> dict[str, Any]:
    return {
        "index": rejection.index,
        "status": REJECTED,
        "code": rejection.code,
        "message": rejection.message,
        "param": rejection.param,
    }


def _refusal_message(code: str, meter: MeterRules) -> str:
    if code == "value_not_integer":
        return f"The meter '{meter.code}' counts whole numbers only."
    return f"The meter '{meter.code}' does not accept negative values."


def usage_ingest(*, project: Project, events: list[Any], now: datetime | None = None) -> IngestResult:
    """Store a batch of usage events (docs/usage.md): validate each, match them all with one
    query, insert the new ones in one statement, and record `usage.recorded` (what was stored)
    and `usage.unmatched` (what named a customer, meter, product or subscription that does not
    exist, or matched no subscription).

    Valid events are stored even when others are rejected. A repeated idempotency key (stored
    before, by a concurrent request, or earlier in this batch) is a duplicate, whatever its value
    or timestamp: the database's unique constraint decides, not a prior read.

    One event sent while other threads of this process send theirs shares their transaction
    (meters.group_commit) and is answered, as alone, once that transaction committed.
    """
    now = now or timezone.now()
    if len(events) == 1 and group_commit.applies():
        with group_commit.ticket() as ticket:
            prepared = _prepare(project, events, now)
            if prepared.rows:
                try:
                    outcome, matched = ticket.submit(_Pending(project, now, prepared), _group_write)
                except group_commit.GroupFailed:
                    pass  # nothing of the group was stored: written alone below
                else:
                    drafts_mark_stale(matched)  # after the commit, as on_commit does alone
                    return outcome
    else:
        prepared = _prepare(project, events, now)
    with transaction.atomic():
        written = events_insert(project_id=project.pk, received_at=now, rows=prepared.rows)
        outcome, matched = _record(project, prepared, written)
        if matched:
            transaction.on_commit(lambda: drafts_mark_stale(matched))
    return outcome


@dataclass(slots=True)
class _Prepared:
    """A request's events, parsed and matched: the rejections so far in `results` (None for the
    others), and the rows to insert."""

    results: list[dict[str, Any] | None]
    parsed: list[ParsedEvent]
    row_of_index: dict[int, EventRow]
    rows: list[EventRow]  # each once, in request order


def _prepare(project: Project, events: list[Any], now: datetime) -> _Prepared:
    results: list[dict[str, Any] | None] = [None] * len(events)
    parsed: list[ParsedEvent] = []
    for index, raw in enumerate(events):
        item = parse_event(index, raw, now=now, require_key=project.require_usage_idempotency_key)
        if type(item) is Rejection:
            results[index] = _rejected(item)
        else:
            parsed.append(item)
    row_of_index = _event_rows(project, parsed, results, now) if parsed else {}
    rows = list({id(row): row for row in row_of_index.values()}.values())  # each row once, in order
    return _Prepared(results, parsed, row_of_index, rows)


def _record(
    project: Project, prepared: _Prepared, written: Inserted
) -> tuple[IngestResult, list[int | None]]:
    """Inside the transaction that inserted the rows: each event's result, and the `usage.recorded`
    and `usage.unmatched` events; the outcome, and the subscriptions whose drafts the stored events
    make stale (none when nothing was stored). `prepared` is left as it was, so that the rows can
    be written again in another transaction if this one fails."""
    results = list(prepared.results)
    row_of_index = prepared.row_of_index
    stored: list[EventRow] = []
    reported: set[str] = set()
    for index, result in enumerate(results):
        if result is not None:
            continue
        row = row_of_index[index]
        if row.public_id not in written.public_ids:
            results[index] = {
                "index": index,
                "status": DUPLICATE,
                "id": written.existing[row.idempotency_key],
            }
        elif row.public_id in reported:  # a later event of this batch with the same key
            results[index] = {"index": index, "status": DUPLICATE, "id": row.public_id}
        else:
            reported.add(row.public_id)
            stored.append(row)
            results[index] = {"index": index, "status": ACCEPTED, "id": row.public_id}
            if row.unmatched_reason:
                results[index].update(
                    status=UNMATCHED,
                    code=row.unmatched_reason,
                    message=_UNMATCHED_MESSAGES[row.unmatched_reason],
                )
    statuses = Counter(result["status"] for result in results)
    outcome = IngestResult(
        results=results,
        accepted=statuses[ACCEPTED],
        duplicates=statuses[DUPLICATE],
        unmatched=statuses[UNMATCHED],
        rejected=statuses[REJECTED],
    )
    events = [("usage.recorded", None, _recorded(outcome, stored))] if stored else []
    unmatched = _unmatched(results, prepared.parsed, row_of_index)
    if unmatched is not None:
        events.append(("usage.unmatched", None, unmatched))
    if events:
        events_record(project=project, events=events)
    return outcome, [row.subscription_id for row in stored]


@dataclass(slots=True)
class _Pending:
    """One request's share of a group (meters.group_commit)."""

    project: Project
    now: datetime
    prepared: _Prepared


def _group_write(group: list[_Pending]) -> list[tuple[IngestResult, list[int | None]]]:
    """Write the rows of several requests in one transaction: one insert per project, then each
    request's results and events, as `usage_ingest` alone does. A key several requests send is
    inserted once, from the first of them; the others are its duplicates."""
    # The group is stored as received when its last request was: no event is received before it is.
    received_at = max(pending.now for pending in group)
    by_project: dict[int, list[_Pending]] = defaultdict(list)
    for pending in group:
        by_project[pending.project.pk].append(pending)
    written: dict[int, Inserted] = {}
    with transaction.atomic():
        # Projects in id order, and each insert in key order (meters.storage): two groups lock
        # the same keys and rollups in the same order and cannot deadlock.
        for project_id in sorted(by_project):
            first_with_key: dict[str, EventRow] = {}
            rows: list[EventRow] = []
            for pending in by_project[project_id]:
                for row in pending.prepared.rows:
                    key = row.idempotency_key
                    if key is None or key not in first_with_key:
                        rows.append(row)
                    if key is not None:
                        first_with_key.setdefault(key, row)
            inserted = events_insert(project_id=project_id, received_at=received_at, rows=rows)
            for key, row in first_with_key.items():
                if row.public_id in inserted.public_ids:  # the others with its key repeat it
                    inserted.existing[key] = row.public_id
            written[project_id] = inserted
        return [_record(pending.project, pending.prepared, written[pending.project.pk]) for pending in group]


def _event_rows(
    project: Project, parsed: list[ParsedEvent], results: list[dict[str, Any] | None], now: datetime
) -> dict[int, EventRow]:
    """Resolve and match the parsed events: the row each will be stored as, by request index
    (events repeating a key share the first one's row). Rejections go into `results`."""
    lookup = Lookup.load(
        project=project,
        customers={
            event.customer for event in parsed if event.customer is not None and not event.by_processor_id
        },
        processor_customers={event.customer for event in parsed if event.by_processor_id},
        subscriptions={event.subscription for event in parsed if event.subscription is not None},
        meters={event.meter for event in parsed if event.meter is not None},
        products={event.product for event in parsed if event.product is not None},
        earliest=min(now, *(event.timestamp for event in parsed)),
        latest=max(now, *(event.timestamp for event in parsed)),
    )
    refuse_unknown = project.unmatched_usage == UnmatchedUsage.REJECT
    public_ids = iter(new_public_ids("evt", len(parsed)))
    row_of_index: dict[int, EventRow] = {}
    first_with_key: dict[str, EventRow] = {}
    for event in parsed:
        resolved = _resolve(event, lookup, now, refuse_unknown=refuse_unknown)
        if type(resolved) is Rejection:
            results[event.index] = _rejected(resolved)
            continue
        key = event.idempotency_key
        if key is not None and key in first_with_key:
            row_of_index[event.index] = first_with_key[key]  # the first event with this key wins
            continue
        match = resolved.match
        row = EventRow(
            public_id=next(public_ids),
            customer_external_id=resolved.customer,
            meter_code=resolved.meter_code,
            value=resolved.value,
            timestamp=event.timestamp,
            properties=event.properties,
            idempotency_key=key,
            customer_id=match.customer_id,
            meter_id=match.meter.id if match.meter is not None else None,
            subscription_id=match.subscription_id,
            unmatched_reason=match.reason,
        )
        row_of_index[event.index] = row
        if key is not None:
            first_with_key[key] = row
    return row_of_index


@dataclass(slots=True)
class _Resolved:
    customer: str  # stored as customer_external_id
    meter_code: str
    value: Decimal
    match: Match


def _resolve(
    event: ParsedEvent, lookup: Lookup, now: datetime, *, refuse_unknown: bool
) -> _Resolved | Rejection:
    """What the event names, and how it matches (docs/usage.md, "Matching"), or why it is refused."""
    index = event.index
    pinned: NamedSubscription | None = None
    if event.subscription is not None:
        found = lookup.subscription(event.subscription)
        if not found:
            return Rejection(
                index, "unknown_subscription", "No subscription has this ID or external_reference.",
                event.subscription_param,
            )  # fmt: skip
        if len(found) > 1:
            return Rejection(
                index, "ambiguous_subscription",
                "Several subscriptions have this external_reference: name one by its ID (sub_…).",
                event.subscription_param,
            )  # fmt: skip
        pinned = found[0]

    customer_id: int | None = None
    unknown_customer = UnmatchedReason.UNKNOWN_CUSTOMER
    if event.by_processor_id:
        unknown_customer = UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER
        candidates = lookup.processor_customer(event.customer)
        if len(candidates) > 1:
            return Rejection(
                index, "ambiguous_customer",
                "Several customers have this processor_customer_id: name the customer by its external_id.",
                event.customer_param,
            )  # fmt: skip
        customer_id = next(iter(candidates), None)
    elif event.customer is not None:
        customer_id = lookup.customer(event.customer)
    if pinned is not None:
        if event.customer is not None and customer_id != pinned.customer_id:
            return Rejection(
                index, "subscription_customer_mismatch", "The subscription is not this customer's.",
                event.customer_param,
            )  # fmt: skip
        customer_id = pinned.customer_id
    elif customer_id is None and refuse_unknown:
        return Rejection(index, unknown_customer, _REFUSED_MESSAGES[unknown_customer], event.customer_param)

    meter = _meter(event, lookup, customer_id, pinned, now)
    if type(meter) is Rejection:
        return meter

    value, is_whole = event.value, event.is_whole
    if value is None:
        if meter is None or not meter.counts_events:
            return Rejection(
                index, "missing_value",
                "value (or units, quantity) is required, unless the meter counts events "
                "(count, unique_count).",
                event.value_param,
            )  # fmt: skip
        value, is_whole = Decimal(1), True  # one event counted
    refusal = meter.refuses(value, is_whole) if meter is not None else None
    if refusal:
        return Rejection(index, refusal, _refusal_message(refusal, meter), event.value_param)

    if pinned is not None:
        # Stored matched to its subscription or not at all: unmatched, a rematch could give it
        # another subscription of the customer.
        if meter is None:
            return Rejection(
                index, UnmatchedReason.UNKNOWN_METER,
                "No meter has this code. An event that names its subscription is not kept unmatched.",
                event.meter_param,
            )  # fmt: skip
        if not lookup.subscription_prices(pinned, meter, event.timestamp):
            return Rejection(
                index, "not_priced_by_subscription",
                "The subscription does not price this meter at the event's time: it had not started, had "
                "ended or was paused, or its plan has no usage charge for the meter.",
                event.subscription_param,
            )  # fmt: skip
        match = Match(customer_id, meter, pinned.id, "")
    else:
        match = lookup.match(customer_id, meter, event.timestamp, unknown_customer=unknown_customer)
        if match.reason == UnmatchedReason.UNKNOWN_METER and refuse_unknown:
            return Rejection(
                index, match.reason, _REFUSED_MESSAGES[match.reason], event.meter_param
            )  # fmt: skip
    customer = event.customer if event.customer is not None else lookup.external_ids[customer_id]
    return _Resolved(customer, meter.code if meter is not None else event.meter, value, match)


def _meter(
    event: ParsedEvent,
    lookup: Lookup,
    customer_id: int | None,
    pinned: NamedSubscription | None,
    now: datetime,
) -> MeterRules | Rejection | None:
    """The meter the event names (None: no meter has that code yet), else its product's, else the
    one its customer's subscriptions (or the one it names) price; or why there is none."""
    priced = None
    if event.product is not None:
        priced = lookup.product_meters(event.product)
        if priced is None:
            return Rejection(
                event.index, "unknown_product", "No product has this code or ID.", event.product_param
            )
    if event.meter is not None:
        meter = lookup.meter(event.meter, by_id=event.meter_by_id)
        if priced is not None and (meter is None or meter.id not in priced):
            return Rejection(
                event.index, "meter_not_in_product", "The product's plans do not price this meter.",
                event.meter_param,
            )  # fmt: skip
        return meter
    if priced is not None:
        if len(priced) == 1:
            return lookup.meters_by_id[next(iter(priced))]
        if priced:
            return Rejection(
                event.index, "ambiguous_meter",
                "meter is required: the product's plans price several meters.", event.meter_param,
            )  # fmt: skip
        return Rejection(
            event.index, "product_not_metered", "The product's plans price no meter: it takes no usage.",
            event.product_param,
        )  # fmt: skip
    meter, problem = lookup.infer_meter(
        customer_id, event.timestamp, now, subscription_id=pinned.id if pinned is not None else None
    )
    if meter is None:
        return Rejection(event.index, problem, _INFER_MESSAGES[problem], event.meter_param)
    return meter


def _unmatched(
    results: list[dict[str, Any]], parsed: list[ParsedEvent], row_of_index: dict[int, EventRow]
) -> dict[str, Any] | None:
    """The `usage.unmatched` event's data, or None: the events stored unmatched, and those refused
    for naming a customer, meter, product or subscription that does not exist; the first
    MAX_UNMATCHED_LISTED of them listed, as sent."""
    counts: Counter[str] = Counter()
    listed: list[dict[str, Any]] = []
    events: dict[int, ParsedEvent] = {}
    for result in results:
        status = result["status"]
        if status != UNMATCHED and (status != REJECTED or result["code"] not in NOT_FOUND_REJECTIONS):
            continue
        counts[status] += 1
        if len(listed) == MAX_UNMATCHED_LISTED:
            continue
        events = events or {event.index: event for event in parsed}
        event, row = events[result["index"]], row_of_index.get(result["index"])
        listed.append(
            {
                "index": result["index"],
                "status": status,
                "code": result["code"],
                "id": result.get("id"),
                "customer": row.customer_external_id if status == UNMATCHED else event.customer,
                "meter": row.meter_code if status == UNMATCHED else event.meter,
                "subscription": event.subscription,
                "product": event.product,
            }
        )
    if not counts:
        return None
    return {
        "unmatched": counts[UNMATCHED],
        "rejected": counts[REJECTED],
        "events": listed,
        "more": counts.total() - len(listed),
    }


def _recorded(outcome: IngestResult, stored: list[EventRow]) -> dict[str, Any]:
    """The `usage.recorded` event's data: the events this request stored, and what the accepted
    ones add up to per customer and meter. (IDs and totals rather than every event in full: for
    1,000 events the full listing made this event cost a sixth of the request.)"""
    totals: dict[tuple[str, str], list] = {}
    for row in stored:
        if not row.unmatched_reason:
            total = totals.setdefault((row.customer_external_id, row.meter_code), [0, Decimal(0)])
            total[0] += 1
            total[1] += row.value
    return {
        "accepted": outcome.accepted,
        "unmatched": outcome.unmatched,
        "events": [row.public_id for row in stored if not row.unmatched_reason],
        "unmatched_events": [row.public_id for row in stored if row.unmatched_reason],
        "usage": [
            {"customer": customer, "meter": meter, "events": count, "value": str(value)}
            for (customer, meter), (count, value) in totals.items()
        ],
    }


REMATCH_BATCH = 1000
# Advisory lock namespace for rematching (the first of the two int4 keys).
_REMATCH_LOCK = 0x75736167


@dataclass
class RematchResult:
    examined: int = 0
    matched: int = 0
    changed: int = 0  # unmatched events whose reason (or known customer or meter) changed
    by_reason: dict[str, int] = field(default_factory=dict)  # still unmatched, among those examined

    def add(self, other: "RematchResult") -> None:
        self.examined += other.examined
        self.matched += other.matched
        self.changed += other.changed
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


def usage_rematch(
    *, project: Project, customer_external_ids: list[str] | None = None, meter_codes: list[str] | None = None
) -> RematchResult:
    """Match the project's unmatched events again: those whose customer, meter or subscription may
    have appeared since (optionally only those naming these customers or meters).

    Works in batches of REMATCH_BATCH by id, each in its own transaction: a few queries to resolve
    the batch, one UPDATE per resulting state, and the newly matched events added to the hourly
    rollups in the same transaction. A customer or meter once known stays known; a matched event
    never changes. Rematches of one project are serialized (a PostgreSQL advisory lock; SQLite
    has one writer), so an event is never matched, and counted in a rollup, twice.
    """
    candidates = _rematch_candidates(project, customer_external_ids, meter_codes)
    result = RematchResult()
    after = 0
    while True:
        with transaction.atomic():
            _lock_rematch(project)
            batch = list(
                candidates.filter(id__gt=after)
                .order_by("id")
                .values_list(
                    "id", "customer_external_id", "meter_code", "value", "timestamp", "unmatched_reason",
                    "customer_id", "meter_id",
                )[:REMATCH_BATCH]
            )  # fmt: skip
            if not batch:
                return result
            after = batch[-1][0]
            _rematch_batch(project, batch, result)


def _rematch_candidates(
    project: Project, customer_external_ids: list[str] | None, meter_codes: list[str] | None
) -> QuerySet[UsageEvent]:
    """Unmatched events whose state can change now: a customer with their external id (or, for
    those named by stripeCustomerId, processor customer id) exists, a meter with their code exists,
    or a non-paused phase of their customer prices their meter at their time. The rest are not even
    read, so the minutely job stays cheap."""
    events = UsageEvent.objects.filter(project=project).exclude(unmatched_reason="")
    if customer_external_ids is not None:
        events = events.filter(customer_external_id__in=customer_external_ids)
    if meter_codes is not None:
        events = events.filter(meter_code__in=meter_codes)
    customer = Customer.objects.filter(project=project, external_id=OuterRef("customer_external_id"))
    processor_customer = Customer.objects.filter(
        project=project, processor_customer_id=OuterRef("customer_external_id")
    )
    meter = Meter.objects.filter(project=project, code=OuterRef("meter_code"))
    phase = SubscriptionPhase.objects.filter(
        subscription__customer_id=OuterRef("customer_id"),
        paused=False,
        starts_at__lte=OuterRef("timestamp"),
        plan__charges__kind=ChargeKind.USAGE,
        plan__charges__meter_id=OuterRef("meter_id"),
    ).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=OuterRef("timestamp")))
    return events.filter(
        Q(unmatched_reason=UnmatchedReason.UNKNOWN_CUSTOMER, customer_id__isnull=True) & Exists(customer)
        | Q(unmatched_reason=UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER, customer_id__isnull=True)
        & Exists(processor_customer)
        | Q(unmatched_reason=UnmatchedReason.UNKNOWN_METER, meter_id__isnull=True) & Exists(meter)
        | Q(
            unmatched_reason__in=[UnmatchedReason.NO_ACTIVE_SUBSCRIPTION, UnmatchedReason.INVALID_VALUE],
            customer_id__isnull=False,
        )
        & Exists(phase)
    )


def _lock_rematch(project: Project) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Two int4 keys: this app's namespace and the project (folded into int4; two projects
            # sharing a key would only take turns).
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_REMATCH_LOCK, project.pk % 2**31])


def _rematch_batch(project: Project, batch: list[tuple], result: RematchResult) -> None:
    by_processor = UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER
    lookup = Lookup.load(
        project=project,
        customers={row[1] for row in batch if row[6] is None and row[5] != by_processor},
        processor_customers={row[1] for row in batch if row[6] is None and row[5] == by_processor},
        meters={row[2] for row in batch if row[7] is None},
        earliest=min(row[4] for row in batch),
        latest=max(row[4] for row in batch),
        customer_ids={row[6] for row in batch if row[6] is not None},
        meter_ids={row[7] for row in batch if row[7] is not None},
    )
    changes: dict[tuple, list[int]] = defaultdict(list)
    for pk, external_id, meter_code, value, timestamp, reason, known_customer, known_meter in batch:
        result.examined += 1
        if known_customer:
            customer_id = known_customer
        elif reason == by_processor:
            candidates = lookup.processor_customer(external_id)
            customer_id = next(iter(candidates)) if len(candidates) == 1 else None  # several: still waits
        else:
            customer_id = lookup.customers.get(external_id)
        meter = lookup.meters_by_id.get(known_meter) if known_meter else lookup.meters.get(meter_code)
        if customer_id and meter and meter.refuses(value, value == value.to_integral_value()):
            new = (customer_id, meter.id, None, UnmatchedReason.INVALID_VALUE)
        else:
            unknown = by_processor if reason == by_processor else UnmatchedReason.UNKNOWN_CUSTOMER
            match = lookup.match(customer_id, meter, timestamp, unknown_customer=unknown)
            new = (match.customer_id, meter.id if meter else None, match.subscription_id, match.reason)
        if new[3]:
            result.by_reason[new[3]] = result.by_reason.get(new[3], 0) + 1
        if new != (known_customer, known_meter, None, reason):
            changes[new].append(pk)
    now = timezone.now()
    newly_matched: list[int] = []
    for (customer_id, meter_id, subscription_id, reason), ids in changes.items():
        UsageEvent.objects.filter(pk__in=ids).update(
            customer_id=customer_id,
            meter_id=meter_id,
            subscription_id=subscription_id,
            unmatched_reason=reason,
            matched_at=now if subscription_id else None,
        )
        if subscription_id:
            newly_matched += ids
        else:
            result.changed += len(ids)
    result.matched += len(newly_matched)
    rollup_add(project_id=project.pk, event_ids=newly_matched)
    matched = [subscription_id for (_, _, subscription_id, _) in changes]
    transaction.on_commit(lambda: drafts_mark_stale(matched))


def usage_rematch_enqueue(
    *, project: Project, customer_external_ids: list[str] | None = None, meter_codes: list[str] | None = None
) -> None:
    """Rematch in the background once the current transaction commits (a customer, meter or
    subscription that unmatched events may have waited for was just created or changed). An empty
    list names nothing: no task."""
    if customer_external_ids == [] or meter_codes == []:
        return
    transaction.on_commit(
        lambda: async_task(
            "meters.tasks.rematch_usage",
            project.pk,
            customer_external_ids=customer_external_ids,
            meter_codes=meter_codes,
        )
    )
