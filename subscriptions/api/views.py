import django_filters

from billing_site.api.filters import CreatedFilterSet
from billing_site.api.views import ServiceViewSet
from catalog.api.filters import CustomerRefFilter
from subscriptions import selectors, services
from subscriptions.api.serializers import (
    SubscriptionCreateSerializer,
    SubscriptionSerializer,
    SubscriptionUpdateSerializer,
)
from subscriptions.models import Status, Subscription


class SubscriptionFilter(CreatedFilterSet):
    customer = CustomerRefFilter()
    plan = django_filters.CharFilter(field_name="plan__public_id", help_text="A plan version ID.")
    status = django_filters.MultipleChoiceFilter(field_name="current_status", choices=Status.choices)

    class Meta:
        model = Subscription
        fields = ["external_reference"]


class SubscriptionViewSet(ServiceViewSet):
    """Subscriptions. PATCH pauses (`status: paused`), resumes (`active`), cancels (`canceled`,
    now or with `cancel_at_period_end`), changes plan (`plan`, `change_at`), sets own prices
    (`price_overrides`) or changes terms; an impossible transition is 422 with `current` and
    `requested`. Usage history is never lost: `phases` record every span."""

    serializer_class = SubscriptionSerializer
    create_serializer_class = SubscriptionCreateSerializer
    update_serializer_class = SubscriptionUpdateSerializer
    filterset_class = SubscriptionFilter
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_project_queryset(self):
        return selectors.subscription_list(project=self.project)

    def create_object(self, data):
        subscription = services.subscription_create(project=self.project, actor=self.request.auth, **data)
        return self.get_project_queryset().get(pk=subscription.pk)

    def update_object(self, subscription, changes):
        updated = services.subscription_update(
            subscription=subscription, changes=changes, actor=self.request.auth
        )
        return self.get_project_queryset().get(pk=updated.pk)
