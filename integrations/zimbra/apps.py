from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_save, pre_save


class ZimbraAppConfig(AppConfig):
    name = "integrations.zimbra"
    label = "zimbra"
    verbose_name = "Zimbra tasks"

    def ready(self) -> None:
        from integrations.models import Connection, UserSwitch
        from integrations.zimbra import outbound
        from syncqueue.signals import job_finished
        from workspace.signals import assignee_status, assignments_changed

        assignments_changed.connect(
            outbound.on_assignments_changed, dispatch_uid="zimbra-assignments-changed"
        )
        assignee_status.connect(outbound.on_assignee_status, dispatch_uid="zimbra-status")
        post_save.connect(
            outbound.on_switch_saved, sender=UserSwitch, dispatch_uid="zimbra-switch-saved"
        )
        pre_save.connect(
            outbound.on_connection_saving, sender=Connection, dispatch_uid="zimbra-moving"
        )
        post_save.connect(
            outbound.on_connection_saved, sender=Connection, dispatch_uid="zimbra-moved"
        )
        job_finished.connect(outbound.on_job_finished, dispatch_uid="zimbra-push-failed")
