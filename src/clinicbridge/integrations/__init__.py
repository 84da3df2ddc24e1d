"""Connectors to outside services, each clinic's configured integrations, and their health."""
