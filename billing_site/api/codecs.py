"""How the API reads and writes JSON, one rule for every route.

- Reading (`parse_json`, used by DRF's parser below and by usage ingestion): NaN, Infinity and a
  number beyond a double's range (1e400) are not readable numbers, nor is an integer of more than
  4,300 digits: `400 invalid_json`, like invalid syntax or UTF-8. Integers are exact whatever their
  size within that. A body nested thousands of levels deep is unreadable too (the standard
  library's parser would raise RecursionError, a 500 in DRF's hands).
- Rendering: a response is UTF-8, unless it would carry a lone surrogate (an error message may quote
  the value that was refused, and "\\ud800" cannot be encoded as UTF-8): then it is written with
  \\u escapes, which every JSON reader understands.
"""

import json
from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser as BaseJSONParser
from rest_framework.renderers import JSONRenderer as BaseJSONRenderer

# orjson reads integers beyond 64 bits as floats: a body with a run of 19 digits or more goes to
# the standard library's parser, which keeps them exact. (Mapping digits to "0" and searching for
# a run is ten times faster than a regular expression over a 200 kB body.)
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19


INVALID_JSON_MESSAGE = "The body is not valid JSON (UTF-8, without NaN, Infinity or numbers beyond a double)."


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a double")
    return number


def parse_json(body: bytes) -> Any:
    """orjson when it is exact, else the standard library. ValueError or RecursionError for what
    cannot be read (see above). Lone surrogates written as escapes ("\\ud800") are read as such;
    the fields that store text refuse them."""
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and may accept what orjson cannot represent
    return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)


class JSONParser(BaseJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return parse_json(stream.read())
        except (ValueError, RecursionError):
            raise ParseError(INVALID_JSON_MESSAGE) from None


class JSONRenderer(BaseJSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            return super().render(data, accepted_media_type, renderer_context)


class JSONOnly(DefaultContentNegotiation):
    """JSON out whatever `Accept` asks for: the API has one representation."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
