"""Microsoft 365 mail through Microsoft Graph with app-only tokens: mailbox delta sync and the
history search behind case syncs."""
