"""Files the API and the admin hand out."""

from django.http import HttpResponse


def pdf_response(data: bytes, filename: str, *, attachment: bool = False) -> HttpResponse:
    """A PDF, shown in the browser (`inline`) or saved (`attachment`) under `filename`."""
    disposition = "attachment" if attachment else "inline"
    return HttpResponse(
        data,
        content_type="application/pdf",
        headers={"Content-Disposition": f'{disposition}; filename="{filename}"'},
    )
