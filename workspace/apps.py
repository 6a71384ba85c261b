from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_save, pre_delete


class WorkspaceConfig(AppConfig):
    name = "workspace"
    verbose_name = "Workspace"

    def ready(self) -> None:
        from syncqueue.signals import job_finished
        from workspace import assignments, cases
        from workspace.models import CaseContact, Task

        post_save.connect(
            cases.contact_added, sender=CaseContact, dispatch_uid="workspace-contact-added"
        )
        job_finished.connect(cases.job_finished, dispatch_uid="workspace-case-state")
        post_save.connect(
            assignments.on_task_saved, sender=Task, dispatch_uid="workspace-task-saved"
        )
        pre_delete.connect(
            assignments.on_task_deleting, sender=Task, dispatch_uid="workspace-task-deleting"
        )
