"""How txlake authenticates and encrypts: Kafka TLS/SASL, MySQL TLS, and the web server's request limits.

Every Kafka client txlake creates (the stream fetcher, the lag poller, progress, topics, the load
generator, ``txlake verify``) takes its connection options from :func:`kafka_client_options`;
Faust's own clients (its consumer and the producer that publishes dead letters) get the same
settings through :func:`faust_broker_credentials`. One place decides, so no client is left on
PLAINTEXT by accident. Secrets (the SASL password, the MySQL password) are ``SecretStr``: read
from the environment or a secret file, revealed only here, at connection time, never logged.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from app.core.settings import KafkaSettings, MySQLSettings

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

__all__ = [
    "faust_broker_credentials",
    "kafka_client_options",
    "kafka_ssl_context",
    "mysql_ssl_context",
    "request_size_limit",
]


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (CA, client certificate for mutual TLS); None otherwise."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None, password)
    return context


def kafka_client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client: bootstrap servers, protocol, TLS, SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    context = kafka_ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return options


def faust_broker_credentials(kafka: KafkaSettings) -> Any:
    """The same settings as Faust ``broker_credentials`` (None: PLAINTEXT)."""
    import faust

    context = kafka_ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def mysql_ssl_context(mysql: MySQLSettings) -> ssl.SSLContext | None:
    """TLS for aiomysql per ``mysql.ssl_mode`` (MySQL's names): None when disabled.

    ``required`` encrypts without checking the server's certificate; ``verify_ca`` checks it
    against ``mysql.ssl_ca``; ``verify_identity`` also checks the host name.
    """
    if mysql.ssl_mode == "disabled":
        return None
    context = ssl.create_default_context(cafile=str(mysql.ssl_ca) if mysql.ssl_ca else None)
    if mysql.ssl_mode == "required":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mysql.ssl_mode == "verify_ca":
        context.check_hostname = False
    return context


def request_size_limit(max_bytes: int) -> Any:
    """aiohttp middleware: refuse a request body over ``max_bytes`` (or of unknown length) with 413/411.

    The worker's POST endpoints (``/exports``, ``/snapshots/{table}``) take small JSON bodies; a
    large or streamed body is never needed, so it is refused before any handler runs (and before
    it is read).
    """
    from aiohttp import web  # the worker's web server only: the command line's clients need no aiohttp

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            length = request.content_length
            if length is None:
                raise web.HTTPLengthRequired(text="a request body needs a Content-Length\n")
            if length > max_bytes:
                raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)
        return await handler(request)

    return limit
