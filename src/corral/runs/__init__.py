"""Runs from request to terminal event: the service, the run queue, the worker."""
