"""`{% unmatched_usage_panel %}`: the admin index's unmatched usage counts (templates/admin/index.html)."""

from django import template
from django.utils.safestring import SafeString

from meters.admin import unmatched_usage_panel as render_panel

register = template.Library()


@register.simple_tag(takes_context=True)
def unmatched_usage_panel(context: template.Context) -> SafeString:
    return render_panel(context["request"])
