"""lakeloop's tests (a regular package, so a ``tests`` package installed by a dependency never shadows it)."""
