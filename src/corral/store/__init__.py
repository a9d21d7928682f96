"""Persistence of threads, runs and events: SQLAlchemy 2 async on SQLite or PostgreSQL."""
