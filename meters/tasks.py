"""django-q2 entry points: thin wrappers that call services."""

from accounts.models import Project
from meters.selectors import projects_with_unmatched_usage
from meters.services import usage_rematch


def rematch_usage(
    project_id: int, customer_external_ids: list[str] | None = None, meter_codes: list[str] | None = None
) -> int:
    """Enqueued when a customer, meter or subscription that unmatched events may wait for appears."""
    project = Project.objects.get(pk=project_id)
    return usage_rematch(
        project=project, customer_external_ids=customer_external_ids, meter_codes=meter_codes
    ).matched


def rematch_all_usage() -> int:
    """The minutely job: catches what no trigger announced (a subscription's end moved, a meter's
    code changed)."""
    return sum(usage_rematch(project=project).matched for project in projects_with_unmatched_usage())
