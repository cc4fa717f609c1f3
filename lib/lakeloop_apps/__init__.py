"""Apps built on the lakeloop engine: conf files plus, at most, a small plugin package each."""
