"""The lake's catalog: what each dataset holds (schema, versions, partitions, files), for readers and the CLI."""
