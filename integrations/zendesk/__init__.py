"""Zendesk Support tickets, per organization, by the cursor-based incremental export."""
