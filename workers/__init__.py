"""Celery workers: where the engine meets the database and the object store."""
