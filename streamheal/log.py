"""structlog set-up: JSON lines to stdout and a rotating file.

On a terminal, stdout gets a readable console format instead; the file is
always JSON, ready for a log stack. Every line passes through a processor
that strips passwords from connection strings and truncates long values.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path
from typing import Any

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

from streamheal._bson import truncate_text


FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_BACKUPS = 5
# The password runs to the last @ before a space: an unescaped @ in it must
# not leave its tail visible.
_PASSWORD_IN_URI = re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]*:)(\S+)(@)")
# URI options that carry secrets. Option names are case-insensitive in a
# connection string; a value runs to the next option separator (& or ;).
_KEY_FILE_PASSWORD = re.compile(
    r"(?i)(?<![\w])(tlsCertificateKeyFilePassword=)([^&;\s]*)"
)
_AUTH_PROPERTIES = re.compile(r"(?i)(?<![\w])(authMechanismProperties=)([^&;\s]*)")
# Both, for whoever must find those values: the value is each match's group 2.
SECRET_OPTIONS = (_KEY_FILE_PASSWORD, _AUTH_PROPERTIES)
_PROPERTY_SEPARATOR = re.compile(r"(?i),|%2C")
_PROPERTY_NAME = re.compile(r"(?i)^[a-z_][a-z0-9_]*(?::|%3A)")


def redact_text(text: str) -> str:
    """Hide the secrets of any connection string in the text behind ***.

    Those are the password, the value of `tlsCertificateKeyFilePassword` and
    every value of `authMechanismProperties` (such as AWS_SESSION_TOKEN's);
    the property names stay readable.
    """
    text = _PASSWORD_IN_URI.sub(r"\1***\3", text)
    text = _KEY_FILE_PASSWORD.sub(r"\1***", text)
    return _AUTH_PROPERTIES.sub(_hide_property_values, text)


def _hide_property_values(match: re.Match[str]) -> str:
    option, properties = match.group(1), match.group(2)
    if not properties:
        return option
    hidden = []
    for pair in _PROPERTY_SEPARATOR.split(properties):
        name = _PROPERTY_NAME.match(pair)
        if name is not None:
            hidden.append(f"{name.group(0)}***")
        else:  # without a NAME: prefix, the whole pair may be the secret
            hidden.append("***" if pair else "")
    return option + ",".join(hidden)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return truncate_text(redact_text(value))
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def scrub_fields(
    logger: WrappedLogger, method: str, event_dict: EventDict
) -> EventDict:
    """A processor: no password and no huge value reaches a log line."""
    return {key: _scrub(value) for key, value in event_dict.items()}


def configure_logging(
    level: str = "info", file: str | None = None, *, console: bool | None = None
) -> None:
    """Send structlog events to stdout (and to `file`), at `level` and above."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_fields,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    use_console = sys.stdout.isatty() if console is None else console
    json_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Locals are left out: they may hold a connection string.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ],
    )
    console_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=True),
        ],
    )

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()

    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(console_formatter if use_console else json_formatter)
    root.addHandler(stdout)
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            file, maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS, encoding="utf-8"
        )
        rotating.setFormatter(json_formatter)
        root.addHandler(rotating)
    root.setLevel(level.upper())

    # Keep the libraries' own chatter at warning and above.
    for name in ("pymongo", "hypercorn.access", "hypercorn.error", "quart", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
