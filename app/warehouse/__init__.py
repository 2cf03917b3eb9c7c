"""The MySQL star schema: the warehouse sink (dimension upserts + ledger), dimension rows, and the live fact tables."""
