"""The mail store shared by the IMAP and Microsoft Graph connectors: models, parsing, upserts."""
