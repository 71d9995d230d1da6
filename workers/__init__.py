"""Celery workers: where the engine meets the database and the object store.

Every worker process (the training child too) loads every table first: rows written here name
teams, datasets and jobs by foreign key, which SQLAlchemy resolves only against known tables.
"""

import app.models  # noqa: F401
