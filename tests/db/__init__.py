"""Database suite: the platform/sql migrations against a real, TLS-only PostgreSQL server."""
