"""The durable outbox: SQLite, WAL, msgpack. Knows no rule kind or protocol."""
