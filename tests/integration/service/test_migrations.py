"""The schema changes only through Alembic, identically on PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import make_engine
from app.core.migrate import downgrade, upgrade
from app.models import Base

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'migrations.db'}"


def test_upgrade_downgrade_round_trip_and_no_drift(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(database_url)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables

        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "render_as_batch": True}
            )
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations differ; write a migration: {diff}"

        downgrade(database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        upgrade(database_url)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        downgrade(database_url, "base")
        engine.dispose()
