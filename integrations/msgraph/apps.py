from __future__ import annotations

from django.apps import AppConfig


class MsgraphAppConfig(AppConfig):
    name = "integrations.msgraph"
    label = "msgraph"
    verbose_name = "Microsoft 365 mail"

    def ready(self) -> None:
        from django.db.models.signals import post_save, pre_delete

        from integrations.msgraph import push
        from syncqueue.signals import dispatcher_pass

        # subscriptions are made and renewed by the dispatcher, one pass at a time
        dispatcher_pass.connect(push.maintain, dispatch_uid="msgraph-push")
        # and deleted at Graph after their connection was deleted (push.retire)
        pre_delete.connect(
            push.retire, sender="integrations.Connection", dispatch_uid="msgraph-push-retire"
        )
        # and moved when the connection names another mailbox (push.settings_saved)
        post_save.connect(
            push.settings_saved,
            sender="integrations.Connection",
            dispatch_uid="msgraph-push-settings",
        )
