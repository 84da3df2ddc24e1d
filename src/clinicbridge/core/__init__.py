"""Cross-cutting pieces every domain uses: ids, clock, errors, tenancy, auth, RBAC."""
