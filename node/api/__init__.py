"""Client-facing surfaces: thin adapters over the TaskManager."""
