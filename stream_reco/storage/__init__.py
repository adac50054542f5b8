"""State store: the Redis adapter behind a narrow interface."""
