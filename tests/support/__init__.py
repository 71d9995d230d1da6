"""Test infrastructure shared by the suites: real servers started as pytest fixtures."""
