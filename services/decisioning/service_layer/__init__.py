"""Decisioning use-cases."""
