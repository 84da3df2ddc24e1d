"""Admin UI: server-rendered Jinja2 pages with htmx, signed in with a session cookie."""
