"""Answered-request records and feedback: one data layer (SQLAlchemy 2) over SQLite (default) or PostgreSQL."""
