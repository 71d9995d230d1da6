"""The audit trail: who changed, downloaded or predicted what, when, from where; append-only."""
