"""Backends behind the auth service's ports."""
