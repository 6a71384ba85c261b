"""What users see: their sync settings page and the JSON API."""
