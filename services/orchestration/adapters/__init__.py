"""Persistence (SQLAlchemy) and the clients of content, delivery and analytics."""
