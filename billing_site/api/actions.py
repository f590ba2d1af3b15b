"""Object actions several routes share."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response


class ArchiveDeleteMixin:
    """`POST …/{id}/archive` hides an object from new use; `DELETE` removes one nothing uses yet
    (once used it answers 409 `in_use`: archive it instead). Subclasses implement
    `archive_object` and `delete_object` with their services."""

    @extend_schema(request=None, summary="Archive")
    @action(detail=True, methods=["post"])
    def archive(self, request, id=None):
        return Response(self.get_serializer(self.archive_object(self.get_object())).data)

    @extend_schema(summary="Delete (only while unused)", responses={204: None})
    def destroy(self, request, id=None):
        self.delete_object(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
