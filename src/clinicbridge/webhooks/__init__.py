"""Inbound webhook inbox and outbound webhook deliveries."""
