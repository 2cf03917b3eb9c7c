"""Kafka TLS/SASL and MySQL TLS options come from one place; secrets never show in settings dumps."""

from __future__ import annotations

import ast
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer

from app.core.security import faust_broker_credentials, kafka_client_options, mysql_ssl_context
from app.core.settings import KafkaSettings, MySQLSettings, Settings
from app.ops.cli import main

REPO = Path(__file__).resolve().parents[2]
KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_plaintext_by_default():
    assert kafka_client_options(KafkaSettings()) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(KafkaSettings()) is None
    assert mysql_ssl_context(MySQLSettings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_with_mutual_tls_reaches_aiokafka_and_faust(certificate, mechanism):
    cert, key = certificate
    kafka = KafkaSettings(
        bootstrap_servers="broker:9093", security_protocol="SASL_SSL", sasl_mechanism=mechanism,
        sasl_username="txlake", sasl_password="pw-123", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
    )
    options = kafka_client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "txlake" and options["sasl_plain_password"] == "pw-123"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED and options["ssl_context"].check_hostname
    consumer = AIOKafkaConsumer(**options)  # aiokafka validates protocol, mechanism and credentials here
    await consumer.stop()  # never started: releases it without touching the network
    credentials = faust_broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == mechanism and credentials.protocol.value == "SASL_SSL"


def test_ssl_only_and_sasl_plaintext(certificate):
    cert, _ = certificate
    tls = KafkaSettings(security_protocol="SSL", ssl_cafile=cert)
    assert "sasl_mechanism" not in kafka_client_options(tls)
    assert isinstance(faust_broker_credentials(tls), faust.SSLCredentials)
    sasl = kafka_client_options(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p"))
    assert "ssl_context" not in sasl and sasl["sasl_mechanism"] == "SCRAM-SHA-512"


def test_mysql_ssl_modes(certificate):
    cert, _ = certificate
    required = mysql_ssl_context(MySQLSettings(ssl_mode="required"))
    assert required.verify_mode == ssl.CERT_NONE and not required.check_hostname
    ca = mysql_ssl_context(MySQLSettings(ssl_mode="verify_ca", ssl_ca=cert))
    assert ca.verify_mode == ssl.CERT_REQUIRED and not ca.check_hostname
    identity = mysql_ssl_context(MySQLSettings(ssl_mode="verify_identity", ssl_ca=cert))
    assert identity.verify_mode == ssl.CERT_REQUIRED and identity.check_hostname


def test_every_kafka_client_in_the_app_takes_the_security_options():
    """Structural: each AIOKafka* call in app/ passes **kafka_client_options(...) (the load generator its
    ``client_options`` parameter, which the CLI fills from the same helper)."""
    calls = 0
    for path in [*REPO.glob("app/**/*.py"), *REPO.glob("agents/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in KAFKA_CLIENTS:
                calls += 1
                spread = [k.value for k in node.keywords if k.arg is None]
                assert spread, f"{path.relative_to(REPO)}:{node.lineno} builds a Kafka client without the security options"
                text = ast.unparse(spread[0])
                assert "kafka_client_options(" in text or "client_options" in text, f"{path}:{node.lineno}: {text}"
    assert calls >= 7


def test_every_mysql_connection_in_the_app_takes_the_tls_settings():
    """Structural: each aiomysql.connect / create_pool in app/ passes ssl=mysql_ssl_context(...) (snapshot
    and export connections ignored mysql.ssl_mode until this test existed)."""
    calls = 0
    for path in [*REPO.glob("app/**/*.py"), *REPO.glob("agents/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("connect", "create_pool"):
                if getattr(node.func.value, "id", None) != "aiomysql":
                    continue
                calls += 1
                ssl_arg = next((k.value for k in node.keywords if k.arg == "ssl"), None)
                assert ssl_arg is not None, f"{path.relative_to(REPO)}:{node.lineno} connects to MySQL without TLS settings"
                assert "mysql_ssl_context(" in ast.unparse(ssl_arg), f"{path}:{node.lineno}"
    assert calls >= 3


def test_settings_dump_masks_every_secret(monkeypatch, tmp_path, capsys):
    secrets = {
        "TXLAKE_MYSQL__PASSWORD": "mysql-secret-4f1",
        "TXLAKE_KAFKA__SASL_PASSWORD": "sasl-secret-9c2",
        "TXLAKE_KAFKA__SSL_KEY_PASSWORD": "key-secret-7d3",
        "TXLAKE_ANONYMIZATION__KEY": "hmac-secret-2b8",
        "TXLAKE_LAKE__S3_SECRET_ACCESS_KEY": "s3-secret-6e5",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "kafka__sasl_username").write_text("from-a-file")
    monkeypatch.setenv("TXLAKE_SECRETS_DIR", str(tmp_path))
    settings = Settings()
    assert settings.kafka.sasl_username == "from-a-file"  # secret files are read
    assert settings.kafka.sasl_password.get_secret_value() == "sasl-secret-9c2"
    assert main(["settings"]) == 0
    dumps = [capsys.readouterr().out, repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    for dump in dumps:
        for value in secrets.values():
            assert value not in dump


def test_every_consumer_in_the_app_reads_committed_records_only():
    """Structural: each AIOKafkaConsumer in app/ and agents/ reads with isolation_level="read_committed".

    The derived streams are written in Kafka transactions (app/derived/sink.py), and so are
    ksqlDB's topics under exactly_once_v2: a read_uncommitted consumer would also see records of
    aborted transactions (the fetcher would land them, verify would count them).
    """
    consumers = 0
    for path in [*REPO.glob("app/**/*.py"), *REPO.glob("agents/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AIOKafkaConsumer":
                consumers += 1
                levels = [ast.literal_eval(k.value) for k in node.keywords if k.arg == "isolation_level"]
                assert levels == ["read_committed"], f"{path.relative_to(REPO)}:{node.lineno} reads uncommitted records"
    assert consumers >= 6
