"""Persistence of facts."""
