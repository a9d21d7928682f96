"""Several nodes on PostgreSQL + Redis: the event bus, the run queue, claims and leases."""
