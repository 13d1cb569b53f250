"""E-dossier storage: immutable objects (folder or S3/MinIO) and the case-record index (SQLite or PostgreSQL)."""
