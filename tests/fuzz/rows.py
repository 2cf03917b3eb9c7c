"""What a decoded record must look like once landed: its lake row, column by column."""

from __future__ import annotations

from operator import attrgetter

from models.arrow import RecordKind


def expected_row(kind: RecordKind, record, partition: int, offset: int) -> dict:
    """The lake row of ``record``: every column from its attribute path, products as a list of structs."""
    row = {}
    for name, _, path in kind.columns:
        if path is None:
            row[name] = [
                {"product_id": p.id, "product_name": p.name, "product_category": p.category, "price": p.price, "quantity": p.quantity}
                for p in record.products
            ]
        else:
            row[name] = attrgetter(path)(record)
    row["_kafka_partition"], row["_kafka_offset"] = partition, offset
    return row
