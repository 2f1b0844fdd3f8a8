"""Fog's auth service."""

__version__ = "0.1.0"
