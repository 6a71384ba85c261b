"""Tasks pushed to Zimbra's Tasks over SOAP (zeep, with a minimal WSDL shipped here)."""
