"""The worker at run time: the Faust app, the batch fetcher, landing a batch into its sinks, dead letters, retry, health."""
