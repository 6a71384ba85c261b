"""Connections to external systems and the connectors that sync them, one package per provider."""
