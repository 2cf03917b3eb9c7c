"""The Parquet lake: the lake sink (commit protocol, ledgers), its storage (local or S3), and the catalog readers use."""
