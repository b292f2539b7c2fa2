"""Operational Analytics: the analysts' web UI over the scored results."""
