"""Local servers that speak the providers' protocols (Microsoft Graph with its token endpoint,
Zendesk, Zimbra), for the test suite and the demo. They listen on 127.0.0.1 only."""
