from __future__ import annotations

from django.apps import AppConfig


class MsgraphAppConfig(AppConfig):
    name = "integrations.msgraph"
    label = "msgraph"
    verbose_name = "Microsoft 365 mail"

    def ready(self) -> None:
        from integrations.msgraph import push
        from syncqueue.signals import dispatcher_pass

        # subscriptions are made and renewed by the dispatcher, one pass at a time
        dispatcher_pass.connect(push.maintain, dispatch_uid="msgraph-push")
