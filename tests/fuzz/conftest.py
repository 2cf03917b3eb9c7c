"""The end-to-end fuzz test runs on the integration fixtures (real Kafka, real MariaDB)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures re-exported for tests/fuzz
    deploy,
    kafka_bootstrap,
    mysql_admin_dsn,
    warehouse_db,
)
