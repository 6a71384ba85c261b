from __future__ import annotations

from django.apps import AppConfig


class MailConfig(AppConfig):
    name = "mail"
    verbose_name = "Mail"

    def ready(self) -> None:
        from mail import attachment_files
        from syncqueue.signals import dispatcher_pass

        # files no row names any more are removed by the dispatcher, a directory at a time
        dispatcher_pass.connect(attachment_files.sweep_due, dispatch_uid="mail-attachment-sweep")
