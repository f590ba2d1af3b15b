"""The API's JSON parser and renderer: DRF's, made safe for any input.

- Parsing: a body nested thousands of levels deep makes the standard library's parser raise
  RecursionError, which DRF does not catch (a 500); here it is a 400 `invalid_json` like any other
  unreadable body.
- Rendering: a response is UTF-8, unless it would carry a lone surrogate (an error message may quote
  the value that was refused, and "\\ud800" cannot be encoded as UTF-8): then it is written with
  \\u escapes, which every JSON reader understands.
"""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as BaseJSONParser
from rest_framework.renderers import JSONRenderer as BaseJSONRenderer


class JSONParser(BaseJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class JSONRenderer(BaseJSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            return super().render(data, accepted_media_type, renderer_context)
