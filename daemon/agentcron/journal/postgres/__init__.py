"""The PostgreSQL journal backend: asyncpg, one group-committing writer connection, a read pool."""
