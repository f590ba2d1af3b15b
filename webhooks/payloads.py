"""How an object appears in an event's `data`: the same as in the API.

Services record events without importing API serializers (imports point inward): each app
registers its serializers here when Django starts (`AppConfig.ready`), and `event_record` looks
the object's model up.
"""

from collections.abc import Callable
from typing import Any

from django.db import models

Serializer = Callable[[Any], dict[str, Any]]
Reissuer = Callable[[Any, dict[str, Any]], dict[str, Any]]
_serializers: dict[type[models.Model], Serializer] = {}
_issued: dict[type[models.Model], Reissuer] = {}


def register(model: type[models.Model], serialize: Serializer, *, issued: Reissuer | None = None) -> None:
    """`issued(obj, composed)`, for a document that is issued: its payload once issued, from the
    one `serialize` built when it was composed earlier in the same transaction."""
    _serializers[model] = serialize
    if issued is not None:
        _issued[model] = issued


def payload_for(obj: models.Model) -> dict[str, Any]:
    try:
        serialize = _serializers[type(obj)]
    except KeyError:
        raise LookupError(f"No event payload registered for {type(obj).__name__}") from None
    return serialize(obj)


def payload_issued(obj: models.Model, composed: dict[str, Any] | None) -> dict[str, Any]:
    """`obj`'s payload once issued: from `composed`, its payload built when it was composed in the
    same transaction, re-rendering only what issuing set (the close builds each invoice's payload
    once); without one, or a way to do so, built afresh."""
    issued = _issued.get(type(obj))
    return payload_for(obj) if composed is None or issued is None else issued(obj, composed)
