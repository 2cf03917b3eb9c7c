"""Settings and the environment: names, secrets and typos derived from the model; expected library noise lowered."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, SecretStr

from app.core.environment import secret_settings, setting_variables, unknown_variables, variable_name
from app.core.logs import EXPECTED_NOISE, quiet_expected_noise
from app.core.settings import Settings


def test_every_field_has_its_variable():
    names = setting_variables(Settings)
    assert names["TXLAKE_MYSQL__PORT"] == "mysql.port"
    assert names["TXLAKE_LOG_LEVEL"] == "log_level"
    assert names["TXLAKE_BLACKLIST__COUNTRIES"] == "blacklist.countries"
    assert names["TXLAKE_MYSQL"] == "mysql"  # a whole section as JSON


def test_secret_settings_are_the_secretstr_fields():
    assert secret_settings(Settings) == [
        "anonymization.key",
        "kafka.sasl_password",
        "kafka.ssl_key_password",
        "ksqldb.password",
        "lake.s3_secret_access_key",
        "mysql.password",
        "web.api_token",
    ]


def test_a_new_secret_field_is_found_without_a_second_list():
    class Section(BaseModel):
        plain: str = "x"
        token: SecretStr | None = None

    class Model(BaseModel):
        section: Section = Section()
        key: SecretStr = SecretStr("k")

    assert secret_settings(Model) == ["key", "section.token"]
    assert variable_name("section.token") == "TXLAKE_SECTION__TOKEN"


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("TXLAKE_MYSQL_PORT", "TXLAKE_MYSQL__PORT"),
        ("TXLAKE_BATCHING__FLUSHSIZE", "TXLAKE_BATCHING__FLUSH_SIZE"),
        ("txlake_kafka__bootstrap_server", "TXLAKE_KAFKA__BOOTSTRAP_SERVERS"),
        ("TXLAKE_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", None),
    ],
)
def test_unknown_variables_get_the_closest_setting(name, suggestion):
    (unknown,) = unknown_variables(Settings, {name: "1", "PATH": "/bin", "TXLAKE_MYSQL__HOST": "db"})
    assert (unknown.name, unknown.suggestion) == (name, suggestion)


def test_variables_read_outside_the_settings_are_known():
    assert unknown_variables(Settings, {"TXLAKE_SECRETS_DIR": "/x", "TXLAKE_KAFKA_PORT": "9092"}) == []


def test_expected_library_noise_is_lowered_not_lost(caplog):
    quiet_expected_noise()
    quiet_expected_noise()  # idempotent: one filter per logger
    producer = logging.getLogger("faust.transport.producer")
    assert len(producer.filters) == 1
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    with caplog.at_level(logging.DEBUG):
        producer.warning("producer buffer full size %s", 3341)
        coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
        coordinator.error("something else failed")
    levels = {record.getMessage(): record.levelname for record in caplog.records}
    assert levels == {
        "producer buffer full size 3341": "DEBUG",
        "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError": "INFO",
        "something else failed": "ERROR",
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        producer.warning("producer buffer full size %s", 3341)
    assert caplog.records == []
    assert set(EXPECTED_NOISE) == {"faust.transport.producer", "aiokafka.consumer.group_coordinator"}
