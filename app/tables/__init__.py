"""Deriving the four tables: delta messages from the transaction stream, exchange rates, and the delta sink."""
