"""Persistence: typed SQLAlchemy 2 models, engine/session factory and migrations."""
