"""IMAP mailboxes: a read-only, resumable mirror (EXAMINE + BODY.PEEK[], UID checkpoints)."""
