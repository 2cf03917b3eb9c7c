"""What ``txlake worker`` checks before Faust starts, so a bad start is one line, not a traceback.

1. **Kafka** answers a metadata request at the bootstrap servers with the configured protocol
   and credentials. Otherwise the worker could not consume at all (Faust itself would exit after
   its own traceback): the error propagates and the command line reports it (exit 1).
2. **MySQL**, when a feed lands in the warehouse: one connection as the configured user to the
   configured database. A *refusal* (wrong password, unknown database, missing grant) is
   terminal and propagates (exit 1). An *unreachable* server only gets a warning: the worker
   starts and waits for it, as it does when MySQL goes away later (not ready, alive).
3. **The web port** can be bound (two workers on one host, or a leftover process).

Raises whatever the failed check raised (aiokafka, pymysql or :class:`OSError` errors);
:func:`app.ops.failures.describe_failure` turns each into its line.
"""

from __future__ import annotations

import errno
import socket
import sys

from app.core.errors import ConfigurationError
from app.core.feeds import Feed
from app.core.security import kafka_client_options, mysql_ssl_context
from app.core.settings import Settings

__all__ = ["preflight"]

_MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}


async def _check_kafka(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    try:
        await admin.start()
    finally:
        await admin.close()


async def _check_mysql(settings: Settings) -> None:
    import aiomysql
    import pymysql

    m = settings.mysql
    try:
        connection = await aiomysql.connect(
            host=m.host, port=m.port, user=m.user, password=m.password.get_secret_value(), db=m.database,
            connect_timeout=m.connect_timeout_s, ssl=mysql_ssl_context(m),
        )
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in _MYSQL_UNREACHABLE:
            print(f"txlake: warning: MySQL at {m.host}:{m.port} is unreachable ({exc.args[-1]}); "
                  f"the worker starts and waits for it (not ready until it answers)", file=sys.stderr)
            return
        raise
    connection.close()


def _check_web_port(settings: Settings) -> None:
    with socket.socket(socket.AF_INET6 if ":" in settings.web.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((settings.web.host, settings.web.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"the web port {settings.web.port} is in use on {settings.web.host} "
                              f"(another worker?); set TXLAKE_WEB__PORT to a free port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigurationError(f"TXLAKE_WEB__HOST={settings.web.host!r} is not an address of this host") from None
            raise


async def preflight(settings: Settings, feeds: tuple[Feed, ...]) -> None:
    """Run the start checks above; return when the worker can start."""
    _check_web_port(settings)
    await _check_kafka(settings)
    if any(feed.warehouse or feed.is_table for feed in feeds):
        await _check_mysql(settings)
