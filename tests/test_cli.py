"""The command line as a user meets it: exit codes, messages, JSON."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient


def streamheal(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamheal.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


BROKEN = """\
mongodb:
  uri: mongodb://localhost:1
  database: shop
engine:
  fix_delay: soon
rules:
  - name: a
    kind: required
    collection: users
  - name: a
    kind: unheard_of
    collection: users
"""


def test_a_broken_rule_file_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(BROKEN)

    result = streamheal("check", str(rules))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "streamheal: 4 problems in the rule file:",
        f"  {rules}:5: engine.fix_delay: expected a duration such as 500ms, 30s or 2m, "
        "not 'soon'.",
        f"  {rules}:7: rules[0].fields: is required.",
        f"  {rules}:10: rules[1]: unknown rule kind 'unheard_of'; expected one of "
        "'required', 'unique', 'reference', 'allowed', 'type', 'range', 'pattern', "
        "'query', 'slow_query'.",
        f"  {rules}:10: rules[1].name: the name 'a' is already used by rules[0]; "
        "rule names must be unique.",
    ]


def test_a_missing_rule_file_is_a_clear_error(tmp_path: Path) -> None:
    result = streamheal("check", str(tmp_path / "nope.yaml"))

    assert result.returncode == 2
    assert (
        result.stderr == "streamheal: 1 problem in the rule file:\n"
        f"  {tmp_path / 'nope.yaml'}: (file): "
        "cannot be read: No such file or directory.\n"
    )


def test_an_unreachable_server_exits_2_without_the_password(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "mongodb:\n  uri: mongodb://admin:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300\n"
        "  database: shop\nrules:\n"
        "  - {name: a, kind: required, collection: u, fields: [x]}\n"
    )

    result = streamheal("check", str(rules))

    assert result.returncode == 2
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert result.stderr.startswith(
        "streamheal: Could not connect to MongoDB at mongodb://admin:***@127.0.0.1:1/"
    )


async def test_check_reports_json_and_exits_1(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    await db.users.insert_many(
        [{"_id": 1, "email": "a@x"}, {"_id": 2}, {"_id": 3, "email": ""}]
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        "  - {name: need_email, kind: required, collection: users, fields: [email]}\n"
    )

    result = streamheal("check", str(rules), "--format", "json")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"] == {"total": 2, "by_rule": {"need_email": 2}}
    assert [
        (v["documents"], v["key"], v["severity"]) for v in report["violations"]
    ] == [
        ([2], ["email"], "medium"),
        ([3], ["email"], "medium"),
    ]
    assert report["violations"][0]["fix"] == "move the document to users_quarantine"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (
            "mongodb://admin:s3cret-pw@db.example.net:notaport/",
            "(Port contains non-digit characters.",
        ),
        ("http://x/", "(Invalid URI scheme:"),
        (
            "mongodb://admin:s3cret/pw9@db:27017/",
            "(Bad database name). A user name or password holding / : @ or % "
            "must be percent-encoded, for instance with urllib.parse.quote_plus.",
        ),
        (
            "mongodb://admin:s3cret-pw@db.example.net:99999/",
            "(Port must be an integer between 0 and 65535).",
        ),
    ],
    ids=["port not a number", "another scheme", "unescaped /", "port too big"],
)
def test_a_malformed_uri_is_one_line_exit_2_without_the_password(
    tmp_path: Path, uri: str, reason: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: '{uri}'\n  database: shop\nrules:\n"
        "  - {name: a, kind: required, collection: u, fields: [x]}\n"
    )

    result = streamheal("check", str(rules))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    prefix = (
        "streamheal: Could not connect to MongoDB at the URI given in mongodb.uri: "
        "it is not a valid MongoDB connection string "
    )
    assert line.startswith(prefix + reason)


FAILING_AND_WORKING_RULES = """\
  - {name: bad_total, kind: query, collection: orders, filter: {total: {$bogus: 1}}}
  - {name: need_email, kind: required, collection: users, fields: [email]}
"""
BOGUS_OPERATOR_ERROR = "OperationFailure (code 2): unknown operator: $bogus"


async def test_a_rule_the_server_rejects_is_reported_and_the_others_run(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    await db.orders.insert_one({"_id": 1, "total": -5})
    await db.users.insert_many([{"_id": 1, "email": "a@x"}, {"_id": 2}])
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        + FAILING_AND_WORKING_RULES
    )

    result = streamheal("check", str(rules), "--format", "json")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["failed_rules"] == [
        {"rule": "bad_total", "error": BOGUS_OPERATOR_ERROR}
    ]
    assert report["summary"] == {
        "total": 1,
        "by_rule": {"bad_total": 0, "need_email": 1},
    }
    assert [(v["rule"], v["documents"]) for v in report["violations"]] == [
        ("need_email", [2])
    ]


async def test_a_failed_rule_has_its_own_line_in_the_text_report(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    # SecantusDB rejects the operator only when a document reaches the
    # filter; MongoDB rejects it at once, even on an empty collection.
    await db.orders.insert_one({"_id": 1, "total": 5})
    await db.users.insert_one({"_id": 1, "email": "a@x"})
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        + FAILING_AND_WORKING_RULES
    )

    result = streamheal("check", str(rules))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        "0 violation(s)",
        "  bad_total: 0",
        "  need_email: 0",
        f"rule bad_total failed: {BOGUS_OPERATOR_ERROR}",
    ]


async def test_a_connection_lost_during_the_sweep_exits_2_with_a_message(
    db: Any,
    mongo_uri: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The driver retries a read once, so the fail point closes the
    connection on the sweep's aggregate and on its retry."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        "  - {name: need_email, kind: required, collection: users, fields: [email]}\n"
    )
    await mongo_client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {
                "failCommands": ["aggregate"],
                "appName": "streamheal",
                "closeConnection": True,
            },
        }
    )
    try:
        result = streamheal("check", str(rules))
    finally:
        await mongo_client.admin.command(
            {"configureFailPoint": "failCommand", "mode": "off"}
        )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"streamheal: Could not connect to MongoDB at {mongo_uri}: the sweep of "
        "rule 'need_email' was interrupted: AutoReconnect"
    )


async def test_check_exits_0_on_clean_data(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    await db.users.insert_one({"_id": 1, "email": "a@x"})
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        "  - {name: need_email, kind: required, collection: users, fields: [email]}\n"
    )

    result = streamheal("check", str(rules))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "0 violation(s)\n  need_email: 0\n"


@pytest.mark.parametrize("command", [["history"], ["rollback", "nope"]])
def test_history_and_rollback_report_connection_errors(
    command: list[str], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "mongodb:\n  uri: mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300\n"
        "  database: shop\n"
        "rules:\n  - {name: a, kind: required, collection: u, fields: [x]}\n"
    )
    args = (
        [*command, str(rules)]
        if command[0] == "history"
        else ["rollback", "nope", str(rules)]
    )

    result = streamheal(*args)

    assert result.returncode == 2
    assert result.stderr.startswith("streamheal: Could not connect to MongoDB")


def test_embedded_uri_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    storage = tmp_path / "data"
    rules.write_text(
        f"mongodb:\n  uri: embedded\n  database: shop\n  storage: {storage}\n"
        "rules:\n"
        "  - {name: need_email, kind: required, collection: users, fields: [email]}\n"
    )

    result = streamheal("check", str(rules), "--format", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "violations": [],
        "summary": {"total": 0, "by_rule": {"need_email": 0}},
        "failed_rules": [],
    }
    assert storage.is_dir() and any(storage.iterdir())


async def test_history_lists_fixes_newest_first(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    await db.streamheal_fixes.insert_many(
        [
            {"_id": "6b11bee63ed1f6966b143c81", "status": "applied", "rule": "r1",
             "summary": "delete document 1", "collection": "users",
             "documents": [1]},
            {"_id": "6b11bee63ed1f6966b143c82", "status": "dry_run", "rule": "r2",
             "summary": "set email='x'", "collection": "users",
             "documents": ["a", "b", "c", "d", "e"]},
            {"_id": "6b11bee63ed1f6966b143c80", "status": "failed", "rule": "r1",
             "error": "WriteError (code 121)"},
        ]
    )  # fmt: skip
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\nrules:\n"
        "  - {name: r1, kind: required, collection: users, fields: [email]}\n"
    )

    result = streamheal("history", str(rules))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "6b11bee63ed1f6966b143c82  -  dry_run     r2 (users, documents "
        '"a", "b", "c" and 2 more): set email=\'x\'',
        "6b11bee63ed1f6966b143c81  -  applied     r1 (users, documents 1): "
        "delete document 1",
        "6b11bee63ed1f6966b143c80  -  failed      r1: WriteError (code 121)",
    ]


async def test_a_busy_dashboard_port_is_a_clear_error(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"mongodb:\n  uri: {mongo_uri}\n  database: {db.name}\n"
            f"dashboard:\n  port: {port}\nlogging:\n  file: null\nrules:\n"
            "  - {name: need_email, kind: required, collection: users, "
            "fields: [email]}\n"
        )

        result = await asyncio.to_thread(streamheal, "run", str(rules))

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"streamheal: The dashboard cannot listen on 127.0.0.1:{port}: Address "
        "already in use. Is another streamheal running? Choose another port with "
        "--port or dashboard.port in the rule file."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"\xff\xfe rules",
            "{path}:1: (file): is not UTF-8 text: byte 0xff at offset 0 cannot be "
            "decoded.",
        ),
        (
            b"mongodb: {uri: '${MONGO', database: x}\n"
            b"rules: [{name: a, kind: required, collection: u, fields: [x]}]\n",
            "{path}:1: mongodb.uri: has a ${{ without its closing }}; write ${{NAME}} "
            "or ${{NAME:-default}}.",
        ),
        (
            b"mongodb: {database: x}\nrules:\n"
            b"  - {name: a, kind: required, collection: u, fields: [x], fields: [y]}\n",
            "{path}:3: rules[0].fields: is given twice (first on line 3); only one "
            "is allowed.",
        ),
    ],
    ids=["not utf-8", "unclosed variable", "duplicate key"],
)
def test_more_rule_file_mistakes_are_named(
    tmp_path: Path, text: bytes, expected: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(text)

    result = streamheal("check", str(rules))

    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == ["  " + expected.format(path=rules)]


@pytest.mark.parametrize(
    ("args", "option", "range_text"),
    [
        (["run", "RULES", "--port", "70000"], "--port", "0<=x<=65535"),
        (["run", "RULES", "--port", "-1"], "--port", "0<=x<=65535"),
        (["demo", "--port", "99999"], "--port", "0<=x<=65535"),
        (["history", "RULES", "--limit", "0"], "--limit", "x>=1"),
    ],
)
def test_out_of_range_numbers_on_the_command_line_are_refused(
    tmp_path: Path, args: list[str], option: str, range_text: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("mongodb: {uri: 'mongodb://127.0.0.1:1', database: x}\n")

    result = streamheal(*[str(rules) if arg == "RULES" else arg for arg in args])

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert f"is not in the range {range_text}" in result.stderr


def test_names_mongodb_refuses_are_rule_file_problems(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "mongodb:\n"
        "  uri: mongodb://127.0.0.1:1\n"
        '  database: "my db.x"\n'
        "rules:\n"
        '  - {name: a, kind: required, collection: "a$b", fields: [x]}\n'
        "  - {name: b, kind: required, collection: system.profile, fields: [x]}\n"
        '  - {name: c, kind: reference, collection: o, field: u, references: "x$y.k"}\n'
        "  - {name: d, kind: required, collection: users., fields: [x]}\n"
    )

    result = streamheal("check", str(rules))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "streamheal: 5 problems in the rule file:",
        f"  {rules}:3: mongodb.database: a database name cannot contain ' ' '.', "
        "as 'my db.x' does.",
        f"  {rules}:5: rules[0].collection: a collection name cannot contain '$', "
        "as 'a$b' does.",
        f"  {rules}:6: rules[1].collection: 'system.profile' is one of the server's "
        "own collections; streamheal checks the application's.",
        f"  {rules}:7: rules[2].references: a collection name cannot contain '$', "
        "as 'x$y' does.",
        f"  {rules}:8: rules[3].collection: 'users.' is not a collection name: it "
        "starts or ends with a dot, or has two in a row.",
    ]
