"""The job tests' deployments (production: PostgreSQL + Redis + SeaweedFS S3; embedded: SQLite +
local objects), reused so artifacts are checked on exactly the service the jobs run on."""

from __future__ import annotations

from tests.integration.jobs.conftest import deployment

__all__ = ["deployment"]
