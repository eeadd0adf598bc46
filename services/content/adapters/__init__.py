"""Persistence of content items."""
