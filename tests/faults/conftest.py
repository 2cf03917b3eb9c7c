"""The fault suite runs on the integration fixtures: the real Kafka and MariaDB, isolated deployments."""

from tests.integration.conftest import (  # noqa: F401 - fixtures re-exported for tests/faults
    deploy,
    kafka_bootstrap,
    mysql_admin_dsn,
    warehouse_db,
)
