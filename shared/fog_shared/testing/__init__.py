"""Test harness: real NATS and PostgreSQL per test session, fresh schemas and streams per test."""
