"""``txlake verify``: prove that every record landed exactly once, or sits in the dead-letter topic.

:mod:`~app.ops.verify.deployment` walks the feeds; :mod:`~app.ops.verify.reconcile` (pure) and
:mod:`~app.ops.verify.tables` hold the rules; :mod:`~app.ops.verify.sources` reads Kafka, the lake and MySQL;
:mod:`~app.ops.verify.render` prints the report.
"""
