"""The tamper-evident audit log: hash-chained events per clinic, verification, export."""
