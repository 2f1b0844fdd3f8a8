"""Postgres plumbing: pools, roles, migrations, outbox and inbox."""
