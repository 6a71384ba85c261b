from __future__ import annotations

from django.contrib import admin

from tests.calfeed.models import FeedEvent


@admin.register(FeedEvent)
class FeedEventAdmin(admin.ModelAdmin):
    list_display = ["summary", "starts", "status", "deleted", "connection"]
    list_filter = ["deleted", "status"]
    search_fields = ["summary", "uid"]
    readonly_fields = ["connection", "uid", "summary", "starts", "ends", "sequence", "status"]
