"""The SQLite journal backend: one file, WAL, a group-committing writer thread."""
