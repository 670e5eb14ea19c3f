"""PostgreSQL data model (SQLAlchemy 2) and the repositories the routes call."""
