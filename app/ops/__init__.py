"""Operating txlake: the command line, topics, progress, the landing report, and verify."""
