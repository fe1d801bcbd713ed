"""Logging: JSON lines with fixed fields, no passwords, no floods of text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from streamheal.config import redact_uri
from streamheal.log import configure_logging, redact_text


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "streamheal.log"
    configure_logging("info", str(path), console=False)
    yield path
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_json_lines_with_their_fields(log_file: Path) -> None:
    structlog.get_logger("streamheal").info(
        "fix_applied", rule="r", fix_id="f1", dry_run=False, duration_ms=1.5
    )

    [line] = read_lines(log_file)

    assert {k: line[k] for k in ("event", "level", "rule", "fix_id", "dry_run")} == {
        "event": "fix_applied",
        "level": "info",
        "rule": "r",
        "fix_id": "f1",
        "dry_run": False,
    }
    assert str(line["timestamp"]).endswith("Z")


def test_a_password_in_any_field_is_replaced(log_file: Path) -> None:
    structlog.get_logger("streamheal").error(
        "stream_interrupted",
        error="auth failed for mongodb://app:hunter2@db1:27017,db2/?replicaSet=rs0",
        nested={"uri": "mongodb+srv://app:hunter2@cluster.example.net/shop"},
    )

    text = log_file.read_text()
    [line] = read_lines(log_file)

    assert "hunter2" not in text
    assert (
        line["error"]
        == "auth failed for mongodb://app:***@db1:27017,db2/?replicaSet=rs0"
    )
    assert line["nested"] == {"uri": "mongodb+srv://app:***@cluster.example.net/shop"}


def test_a_huge_value_is_truncated(log_file: Path) -> None:
    logger = structlog.get_logger("streamheal")
    logger.info("violation_detected", description="x" * 10_000)

    [line] = read_lines(log_file)

    assert line["description"] == "x" * 500 + "… (9500 more characters)"


def test_levels_below_the_setting_are_dropped(log_file: Path) -> None:
    structlog.get_logger("streamheal").debug("violation_deferred", rule="r")

    assert log_file.read_text() == ""


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://u:p%40ss@h:1/db", "mongodb://u:***@h:1/db"),
        ("mongodb://h1,h2/?replicaSet=rs", "mongodb://h1,h2/?replicaSet=rs"),
        ("mongodb://user@h/", "mongodb://user@h/"),
        ("embedded", "embedded"),
        ("mongodb://:s3cret@h/db", "mongodb://:***@h/db"),
    ],
)
def test_connection_strings_are_shown_without_passwords(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_text(uri) == shown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=k3y-pw&w=1",
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***&w=1",
        ),
        (
            "mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=k3y-pw",
            "mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=***",
        ),
        (
            "mongodb://h/?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:t0k3n/x%2B%3D",
            "mongodb://h/?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:***",
        ),
        (
            "mongodb://h/?authMechanismProperties="
            "SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:t0k3n;replicaSet=rs0",
            "mongodb://h/?authMechanismProperties="
            "SERVICE_NAME:***,AWS_SESSION_TOKEN:***;replicaSet=rs0",
        ),
        (
            "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN%3At0k3n",
            "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN%3A***",
        ),
        (
            "mongodb://h/?authMechanismProperties=t0k3n",
            "mongodb://h/?authMechanismProperties=***",
        ),
        (
            "mongodb://app:hunter2@h1,h2/?replicaSet=rs"
            "&tlsCertificateKeyFilePassword=k3y-pw"
            "&authMechanismProperties=AWS_SESSION_TOKEN:t0k3n",
            "mongodb://app:***@h1,h2/?replicaSet=rs"
            "&tlsCertificateKeyFilePassword=***"
            "&authMechanismProperties=AWS_SESSION_TOKEN:***",
        ),
        ("mongodb://u:p@ss@h:1/", "mongodb://u:***@h:1/"),
    ],
    ids=[
        "key file password",
        "option names ignore case",
        "session token",
        "every property value",
        "percent-encoded colon",
        "a property without a name",
        "password and options together",
        "an unescaped @ in the password",
    ],
)
def test_secret_options_are_shown_without_their_values(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_text(uri) == shown


def test_secret_options_are_hidden_in_any_text() -> None:
    text = (
        "failed: mongodb://h/?tlsCertificateKeyFilePassword=k3y-pw and "
        "authMechanismProperties=AWS_SESSION_TOKEN:t0k3n, retrying"
    )

    assert redact_text(text) == (
        "failed: mongodb://h/?tlsCertificateKeyFilePassword=*** and "
        "authMechanismProperties=AWS_SESSION_TOKEN:***, retrying"
    )


def test_a_secret_option_in_a_log_field_is_replaced(log_file: Path) -> None:
    structlog.get_logger("streamheal").error(
        "stream_interrupted",
        error="mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:t0k3n",
    )

    [line] = read_lines(log_file)

    assert "t0k3n" not in log_file.read_text()
    assert line["error"] == "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:***"
