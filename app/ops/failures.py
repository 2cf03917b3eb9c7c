"""What the command line says when a command fails: one line, and an exit status.

:func:`describe_failure` turns an exception into a :class:`Failure` -- a message a user can act on
(which address, what failed, what to check) and the exit status: :data:`EXIT_USAGE` (2) for a
bad invocation or configuration, :data:`EXIT_FAILURE` (1) for a failure at run time,
:data:`EXIT_INTERRUPTED` (130) for Ctrl-C. It looks through the exception's causes (``raise …
from``), so a MySQL refusal wrapped in a sink error is still reported as the refusal. Pure: no
I/O, the settings only name addresses and variables.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from app.core.environment import variable_name
from app.core.errors import ConfigurationError, TxlakeError
from app.core.settings import Settings

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "Failure",
    "describe_failure",
    "settings_errors",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# MySQL client/server error numbers (pymysql: e.args[0]).
_MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_MYSQL_ACCESS_DENIED = 1045
_MYSQL_DB_ACCESS_DENIED = 1044
_MYSQL_UNKNOWN_DATABASE = 1049
_MYSQL_NO_TABLE = 1146
_MYSQL_COMMAND_DENIED = {1142, 1143}


@dataclass(frozen=True)
class Failure:
    """One line for stderr (without the ``txlake:`` prefix) and the process's exit status."""

    message: str
    exit_code: int


def settings_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting: ``TXLAKE_BATCHING__FLUSH_SIZE='abc': Input should be a valid integer…``."""
    lines = []
    for error in exc.errors(include_url=False):
        path = tuple(str(part) for part in error["loc"] if not isinstance(part, int))
        name = variable_name(path) if path else "settings"
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None else f"={given!r}"
        lines.append(f"{name}{shown}: {error['msg']}")
    return lines


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, then the first member of an exception group; no cycles."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
        else:
            current = current.__cause__ or current.__context__


def _mysql_failure(exc: BaseException, settings: Settings) -> Failure | None:
    import pymysql

    if not isinstance(exc, pymysql.err.MySQLError) or not exc.args or not isinstance(exc.args[0], int):
        return None
    code, text = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else ""
    m = settings.mysql
    where = f"MySQL at {m.host}:{m.port}"
    if code in _MYSQL_UNREACHABLE:
        return Failure(
            f"cannot reach {where} ({text}); check that the server is running (make up, locally) and "
            f"{variable_name('mysql.host')} / {variable_name('mysql.port')}",
            EXIT_FAILURE,
        )
    if code == _MYSQL_ACCESS_DENIED:
        return Failure(
            f"{where} refused user {m.user!r} ({text}); check {variable_name('mysql.user')} and the password "
            f"({variable_name('mysql.password')} or the secret file mysql__password)",
            EXIT_FAILURE,
        )
    if code == _MYSQL_UNKNOWN_DATABASE:
        return Failure(
            f"{where} has no database {m.database!r}; check {variable_name('mysql.database')}, or create it "
            f"with sql/01..05 (locally: bash scripts/infra/mariadb.sh init)",
            EXIT_FAILURE,
        )
    if code == _MYSQL_DB_ACCESS_DENIED or code in _MYSQL_COMMAND_DENIED:
        return Failure(
            f"{where}: {text}; check {variable_name('mysql.database')} (does {m.database!r} exist?) and that user "
            f"{m.user!r} has SELECT, INSERT, UPDATE, DELETE on it",
            EXIT_FAILURE,
        )
    if code == _MYSQL_NO_TABLE:
        return Failure(f"{where}: {text}; apply the warehouse schema (sql/02..05) to {m.database!r}", EXIT_FAILURE)
    return Failure(f"{where}: error {code}: {text}", EXIT_FAILURE)


def _kafka_failure(exc: BaseException, settings: Settings) -> Failure | None:
    from aiokafka import errors as kafka_errors

    if not isinstance(exc, kafka_errors.KafkaError):
        return None
    k = settings.kafka
    where = f"Kafka at {k.bootstrap_servers}"
    servers = variable_name("kafka.bootstrap_servers")
    kind = type(exc).__name__
    detail = str(exc).removeprefix(f"{kind}: ")
    if detail.startswith("Unable to bootstrap"):
        detail = "no broker answered"
    if isinstance(exc, (kafka_errors.AuthenticationFailedError, kafka_errors.AuthenticationMethodNotSupported)):
        return Failure(
            f"{where} refused the credentials ({kind}: {detail}); check {variable_name('kafka.sasl_mechanism')}, "
            f"{variable_name('kafka.sasl_username')} and the password (secret file kafka__sasl_password)",
            EXIT_FAILURE,
        )
    if "Authorization" in kind:
        return Failure(f"{where} denied access ({kind}); the ACLs of user {k.sasl_username!r} must allow it",
                       EXIT_FAILURE)
    if isinstance(exc, (kafka_errors.KafkaConnectionError, kafka_errors.NoBrokersAvailable,
                        kafka_errors.NodeNotReadyError, kafka_errors.KafkaTimeoutError)):
        return Failure(
            f"cannot reach {where} ({detail}); check that the broker is running (make up, locally), "
            f"{servers} and {variable_name('kafka.security_protocol')} ({k.security_protocol})",
            EXIT_FAILURE,
        )
    return Failure(f"{where}: {kind}: {detail}", EXIT_FAILURE)


def describe_failure(exc: BaseException, settings: Settings | None) -> Failure:
    """The one line and the exit status for ``exc``, raised by a command run with ``settings``.

    ``settings`` is None when they could not be built; only configuration errors are expected then.
    """
    from pydantic_settings import SettingsError

    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", EXIT_INTERRUPTED)
    for link in _chain(exc):
        if isinstance(link, ValidationError) and link.title == Settings.__name__:
            return Failure("configuration error: " + "; ".join(settings_errors(link)), EXIT_USAGE)
        if isinstance(link, SettingsError):
            cause = f": {link.__cause__}" if link.__cause__ is not None else ""
            return Failure(f"configuration error: {link}{cause}", EXIT_USAGE)
        if isinstance(link, ConfigurationError):
            return Failure(f"configuration error: {link}", EXIT_USAGE)
        if settings is not None:
            found = _mysql_failure(link, settings) or _kafka_failure(link, settings)
            if found is not None:
                return found
    if isinstance(exc, TxlakeError):
        return Failure(str(exc), EXIT_FAILURE)
    if isinstance(exc, ssl.SSLError):
        return Failure(f"TLS failed: {exc}; check the CA file and certificates in the settings", EXIT_FAILURE)
    if isinstance(exc, TimeoutError):
        return Failure(str(exc) or "timed out", EXIT_FAILURE)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return Failure(f"{exc.strerror}{where}", EXIT_FAILURE)
    text = str(exc)
    return Failure(f"{type(exc).__name__}{': ' + text if text else ''} (run with --debug for the traceback)",
                   EXIT_FAILURE)
