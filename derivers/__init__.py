"""derivers package."""
