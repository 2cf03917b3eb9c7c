"""The derived streams written by txlake itself (``streams.derive``): see docs/derived-streams.md."""
