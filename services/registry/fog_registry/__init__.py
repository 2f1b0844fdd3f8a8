"""Fog's registry service."""

__version__ = "0.1.0"
