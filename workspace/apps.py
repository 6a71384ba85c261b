from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_save


class WorkspaceConfig(AppConfig):
    name = "workspace"
    verbose_name = "Workspace"

    def ready(self) -> None:
        from syncqueue.signals import job_finished
        from workspace import cases
        from workspace.models import CaseContact

        post_save.connect(
            cases.contact_added, sender=CaseContact, dispatch_uid="workspace-contact-added"
        )
        job_finished.connect(cases.job_finished, dispatch_uid="workspace-case-state")
