"""What every part of txlake shares: settings, the feeds, the sink contract, errors, security, logs, metrics."""
