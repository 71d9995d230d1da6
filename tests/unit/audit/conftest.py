"""The teams fixtures (embedded service, client, teams with a key per role) serve here too."""

from tests.unit.teams.conftest import client, session, store

__all__ = ["client", "session", "store"]
