"""How an object appears in an event's `data`: the same as in the API.

Services record events without importing API serializers (imports point inward): each app
registers its serializers here when Django starts (`AppConfig.ready`), and `event_record` looks
the object's model up.
"""

from collections.abc import Callable
from typing import Any

from django.db import models

Serializer = Callable[[Any], dict[str, Any]]
_serializers: dict[type[models.Model], Serializer] = {}


def register(model: type[models.Model], serialize: Serializer) -> None:
    _serializers[model] = serialize


def payload_for(obj: models.Model) -> dict[str, Any]:
    try:
        serialize = _serializers[type(obj)]
    except KeyError:
        raise LookupError(f"No event payload registered for {type(obj).__name__}") from None
    return serialize(obj)
