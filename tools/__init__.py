"""Development tools that are not part of the worker image (the demo load generator)."""
