"""The route Stripe sends a project's events to: /webhooks/stripe/<project ID>/ (docs/payments.md)."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing_site.api.errors import error_response
from billing_site.errors import DomainError
from payments.incoming import stripe_event_receive


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest, project_id: str) -> JsonResponse:
    try:
        event, repeated = stripe_event_receive(
            project_id=project_id, payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except DomainError as error:
        return error_response(error.status, error.code, error.message)
    return JsonResponse({"received": True, "duplicate": repeated, "outcome": event.outcome})
