"""Background work: the worker process, its heartbeat and housekeeping."""
