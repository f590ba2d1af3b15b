import json

import orjson
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Scope
from billing_site.api.actions import ArchiveDeleteMixin
from billing_site.api.errors import envelope
from billing_site.api.filters import ArchivedFilterSet
from billing_site.api.views import ServiceViewSet
from billing_site.errors import InvalidInput, Unprocessable
from billing_site.ratelimit import INGEST
from catalog.selectors import customer_by_reference
from meters import selectors, services
from meters.aggregation import GRANULARITY_STEPS
from meters.api.serializers import (
    USAGE_REQUEST_SCHEMA,
    CustomerUsageSerializer,
    MeterSerializer,
    MeterWriteSerializer,
    UsageIngestResponseSerializer,
    UsageSummaryQuery,
    UsageSummarySerializer,
    format_quantity,
)
from meters.ingestion import NOT_FOUND_REJECTIONS, SEMANTIC_REJECTIONS, BodyError, events_from_body
from meters.models import Meter
from meters.services import clean_group_by

MAX_BUCKETS = 10_000


class MeterFilter(ArchivedFilterSet):
    class Meta:
        model = Meter
        fields = ["code", "aggregation"]


class MeterViewSet(ArchiveDeleteMixin, ServiceViewSet):
    """Meters: the usage signals clients report (`code` is the event name)."""

    serializer_class = MeterSerializer
    create_serializer_class = MeterWriteSerializer
    filterset_class = MeterFilter

    def get_project_queryset(self):
        return selectors.meter_list(project=self.project)

    def create_object(self, data):
        return services.meter_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, meter, changes):
        return services.meter_update(meter=meter, changes=changes, actor=self.request.auth)

    def archive_object(self, meter):
        return services.meter_archive(meter=meter, actor=self.request.auth)

    def delete_object(self, meter):
        services.meter_delete(meter=meter, actor=self.request.auth)


def _json_content_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") or media_type.endswith("+json")


class UsageIngestView(APIView):
    """Report usage events (docs/usage.md)."""

    rate_limit_scope = INGEST
    required_scopes = {"POST": Scope.USAGE_WRITE}

    @extend_schema(
        summary="Report usage",
        description=(
            'One event, a list of events, or `{"events": [...]}`: up to 1,000 per request (413 '
            "`too_many_events` beyond; bodies over API_MAX_BODY_BYTES, 5 MiB by default, are 413 "
            "`request_too_large`). `Content-Encoding: gzip` is accepted. Every event is reported in "
            "request order as `accepted`, `duplicate` (its idempotency_key was seen before; counted "
            "once), `unmatched` (stored, billed once its customer, meter or subscription exists; "
            "`code` says which is missing) or `rejected` (`code` and `param` say why). Valid events "
            "are stored even when others are rejected (200). When every event is rejected nothing is "
            "stored, and the answer holds the first rejection in `error`, plus `results`: for one event "
            "object, 404 when it names a customer, meter, product or subscription that does not exist "
            "(and is not kept unmatched), 400 when it does not have the documented shape and 422 when "
            "it has but cannot be taken (the meter refuses the value, the timestamp is in the future, "
            "…); for a list, whose elements are each checked on their own, 422. A body that cannot be "
            "read is 400 `invalid_json`, `invalid_body`, `unknown_field` or `no_events`."
        ),
        request={"application/json": USAGE_REQUEST_SCHEMA},
        responses={
            200: UsageIngestResponseSerializer,
            404: OpenApiResponse(
                description="The one event names a customer, meter, product or subscription that does "
                "not exist, and is not kept unmatched (`unknown_customer`, `unknown_meter`, …): nothing "
                "was stored."
            ),
        },
        tags=["usage"],
    )
    def post(self, request: Request) -> HttpResponse:
        if not _json_content_type(request.content_type or ""):
            return _json_response(
                envelope(
                    status=415,
                    code="unsupported_media_type",
                    message="Send JSON (Content-Type: application/json).",
                ),
                415,
            )
        try:
            events, single = events_from_body(request.body)
        except BodyError as error:
            return _json_response(
                envelope(status=error.status, code=error.code, message=error.message), error.status
            )
        outcome = services.usage_ingest(project=request.auth.project, events=events)
        body = {
            "results": outcome.results,
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "unmatched": outcome.unmatched,
            "rejected": outcome.rejected,
        }
        if outcome.all_rejected:  # nothing stored: the first fault is the error
            first = outcome.results[0]
            status = _refusal_status(first["code"], single=single)
            error = envelope(
                status=status,
                type="invalid_request",
                code=first["code"],
                message=first["message"],
                param=first["param"],
            )
            return _json_response({**error, **body}, status)
        return _json_response(body, 200)


def _refusal_status(code: str, *, single: bool) -> int:
    """The status of a request whose every event was rejected, from the first rejection: for one
    event object, 404 when it names a customer, meter, product or subscription that does not
    exist, 400 when it does not have the documented shape, else 422; for a list, whose elements
    are each checked on their own, 422."""
    if not single:
        return 422
    if code in NOT_FOUND_REJECTIONS:
        return 404
    return 422 if code in SEMANTIC_REJECTIONS else 400


def _json_response(body: dict, status: int) -> HttpResponse:
    """Rendered with orjson: a 1,000-event answer costs a tenth of DRF's renderer. A message that
    quotes a lone surrogate from the request cannot be UTF-8: then it is written with \\u escapes."""
    try:
        content = orjson.dumps(body)
    except orjson.JSONEncodeError:
        content = json.dumps(body).encode()
    return HttpResponse(content, status=status, content_type="application/json")


class CustomerUsageView(APIView):
    """The current period's usage of a customer, per subscription and meter."""

    @extend_schema(
        summary="Current usage of a customer",
        description=(
            "For each of the customer's active, trialing or paused subscriptions: the billing "
            "period containing now and, per meter its plans price, the quantity so far (a decimal "
            "string, aggregated as the meter says) and its breakdown by the meter's `group_by` "
            "properties. Only matched events count."
        ),
        parameters=[
            OpenApiParameter(
                "id", str, OpenApiParameter.PATH, description="The customer's ID (cus_…) or your external_id."
            )
        ],
        responses={200: CustomerUsageSerializer},
        tags=["usage"],
    )
    def get(self, request: Request, id: str) -> Response:
        customer = customer_by_reference(project=request.auth.project, reference=id)
        if customer is None:
            raise NotFound(f"No such customer: '{id}'.")
        now = timezone.now()
        usage = selectors.customer_current_usage(customer=customer, now=now)
        return Response(
            CustomerUsageSerializer(
                {"customer": customer.public_id, "as_of": now, "subscriptions": usage}
            ).data
        )


class UsageSummaryView(APIView):
    """Usage totals over a window, per meter and dimension, bucketed by hour or day."""

    @extend_schema(
        summary="Usage summary",
        description=(
            "Billed usage (matched events) over [from, to), per meter and per group of the "
            "`group_by` dimensions: the total for the window and the non-empty UTC hour or day "
            f"buckets (at most {MAX_BUCKETS:,} buckets per request). For cost forecasts and "
            "chargeback reports."
        ),
        parameters=[UsageSummaryQuery],
        responses={
            200: UsageSummarySerializer,
            422: OpenApiResponse(
                description="An unknown customer or meter, `to` not after `from`, too many buckets, or "
                "too many `group_by` dimensions."
            ),
        },
        tags=["usage"],
    )
    def get(self, request: Request) -> Response:
        query = UsageSummaryQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        options = query.validated_data
        project = request.auth.project
        start, end, granularity = options["from"], options["to"], options["granularity"]
        if end <= start:
            raise Unprocessable("to must be after from.", code="invalid_window", param="to")
        if (end - start) / GRANULARITY_STEPS[granularity] > MAX_BUCKETS:
            raise Unprocessable(
                f"At most {MAX_BUCKETS:,} {granularity} buckets: narrow the window or use day.",
                code="too_many_buckets",
                param="granularity",
            )
        dimensions = [name.strip() for name in options.get("group_by", "").split(",") if name.strip()]
        by_customer = "customer" in dimensions
        try:
            properties = clean_group_by(
                [name.removeprefix("properties.") for name in dimensions if name not in ("customer", "meter")]
            )
        except InvalidInput as error:  # the parameter is one string: its shape was right
            raise Unprocessable(error.message, code=error.code, param="group_by") from None
        customer = None
        if "customer" in options:
            customer = customer_by_reference(project=project, reference=options["customer"])
            if customer is None:
                raise Unprocessable(
                    "No such customer in this project.", code="unknown_customer", param="customer"
                )
        meters = selectors.meter_list(project=project).order_by("code")
        if "meter" in options:
            codes = {code.strip() for code in options["meter"].split(",") if code.strip()}
            meters = list(meters.filter(code__in=codes))
            missing = codes - {meter.code for meter in meters}
            if missing:
                raise Unprocessable(
                    f"No such meter: {', '.join(sorted(missing))}.", code="unknown_meter", param="meter"
                )
        groups = selectors.usage_summary(
            project=project, start=start, end=end, meters=meters, customer=customer,
            group_by=properties, by_customer=by_customer, granularity=granularity,
        )  # fmt: skip
        customers = selectors.customer_public_ids(
            project=project, ids={group.dimensions[0] for group in groups} if by_customer else set()
        )
        results = []
        for group in groups:
            values = list(group.dimensions)
            named = {"customer": customers.get(values.pop(0))} if by_customer else {}
            named.update(zip(properties, values, strict=True))
            results.append(
                {
                    "meter": group.meter.code,
                    "dimensions": named,
                    "quantity": format_quantity(group.quantity),
                    "buckets": [
                        {"start": bucket, "quantity": format_quantity(amount)}
                        for bucket, amount in group.buckets
                    ],
                }
            )
        return Response(
            {
                "from": start,
                "to": end,
                "granularity": granularity,
                "group_by": dimensions,
                **UsageSummarySerializer({"results": results}).data,
            }
        )
