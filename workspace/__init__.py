"""Host-domain objects the syncs feed: organizations (and later tasks, cases, contacts)."""
