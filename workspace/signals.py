"""What the host domain announces. Provider apps subscribe in their ``AppConfig.ready()``;
workspace itself never names a provider.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent once the change has committed, with ``assignment_ids``: people were assigned or
# unassigned, or the task of these assignments changed or was deleted. Receivers bring their
# copies (e.g. a task in someone's connected task list) in step.
assignments_changed = Signal()

# Sent by pages and the API that show assignees, with ``assignments`` (a list). Each receiver
# returns {assignment_id: {"state": ..., "error": ...}} for the copies it keeps.
assignee_status = Signal()
