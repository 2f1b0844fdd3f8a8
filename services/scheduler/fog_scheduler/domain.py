"""Pure rules of the scheduler service: synchronous, no I/O, no clock, no uuid4 (all passed in).

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.
"""
