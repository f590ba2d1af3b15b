"""Prefixed public IDs (`cus_…`, `in_…`): what the API and webhooks show instead of primary keys.

An ID is the prefix, an underscore and 22 base62 characters encoding 128 bits: a 48-bit
millisecond timestamp followed by 80 random bits. Time first keeps IDs roughly sortable and keeps
inserts into their unique index appending instead of splitting pages all over the tree.
"""

import secrets
import time
from functools import partial

from django.db import models

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LENGTH = 22
# Two base62 digits at a time: half the divisions, which dominate the cost.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def new_public_id(prefix: str) -> str:
    return new_public_ids(prefix, 1)[0]


def new_public_ids(prefix: str, count: int) -> list[str]:
    """`count` IDs at once (usage ingestion makes up to 1,000 a request): one clock reading and
    one read of the system's randomness for all of them."""
    milliseconds = (time.time_ns() // 1_000_000) << 80
    randomness = secrets.token_bytes(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        number = milliseconds | int.from_bytes(randomness[start : start + 10])
        pairs = []
        for _ in range(_LENGTH // 2):
            number, pair = divmod(number, 3844)
            pairs.append(_PAIRS[pair])
        ids.append(f"{prefix}_{''.join(reversed(pairs))}")
    return ids


def has_public_id_shape(text: str, prefix: str) -> bool:
    """Whether `text` could be an ID with this prefix (lookups skip what cannot be one)."""
    return len(text) == len(prefix) + 1 + _LENGTH and text.startswith(f"{prefix}_")


class PublicIdField(models.CharField):
    """A unique, immutable, prefixed ID generated when the instance is created in Python."""

    def __init__(self, *args, prefix: str, **kwargs):
        self.prefix = prefix
        kwargs["max_length"] = len(prefix) + 1 + _LENGTH
        kwargs.setdefault("unique", True)
        kwargs["editable"] = False
        kwargs["default"] = partial(new_public_id, prefix)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("default", None)
        kwargs.pop("editable", None)
        kwargs.pop("max_length", None)
        kwargs["prefix"] = self.prefix
        if not self.unique:  # CharField omits its default (False), which is not ours (True)
            kwargs["unique"] = False
        return name, path, args, kwargs
