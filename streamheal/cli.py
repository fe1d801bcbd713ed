"""The command line: run, check, demo, history, rollback.

A user's mistake (a bad rule file, an unreachable server) ends in a clear
message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import click
import structlog

from streamheal._bson import to_json_value
from streamheal.config import EMBEDDED_URI, Settings, load_settings, redact_uri
from streamheal.embedded import MEMORY_STORAGE, EmbeddedServer
from streamheal.errors import ConnectionFailedError, StreamhealError
from streamheal.log import configure_logging, redact_text
from streamheal.rules import Database, Rule
from streamheal.state import describe_violation


EXIT_CLEAN = 0
EXIT_VIOLATIONS = 1
EXIT_ERROR = 2
EXIT_CRASH = 3

PORT = click.IntRange(0, 65535)

T = TypeVar("T")


def fail(message: str) -> None:
    click.echo(f"streamheal: {redact_text(message)}", err=True)
    sys.exit(EXIT_ERROR)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn streamheal's errors into a message and status 2."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]  # any awaitable from an async def
    except StreamhealError as exc:
        fail(str(exc))
        raise AssertionError("unreachable") from exc
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        # A bug, not a user's mistake: keep the traceback, in the log's format.
        structlog.get_logger("streamheal").exception("streamheal_crashed")
        sys.exit(EXIT_CRASH)


def read_settings(rules_path: str) -> Settings:
    try:
        return load_settings(rules_path)
    except StreamhealError as exc:
        fail(str(exc))
        raise AssertionError("unreachable") from exc


@contextlib.asynccontextmanager
async def database_uri(
    settings: Settings, *, memory: bool = False
) -> AsyncIterator[str]:
    """The URI to use: the configured one, or an embedded server's."""
    if not settings.mongodb.is_embedded:
        yield settings.mongodb.uri
        return
    storage = MEMORY_STORAGE if memory else settings.mongodb.storage
    server = EmbeddedServer(storage)
    await server.start_async()
    try:
        yield server.uri
    finally:
        await server.stop_async()


@click.group()
@click.version_option(package_name="streamheal")
def main() -> None:
    """streamheal: find and repair bad data in MongoDB as it is written."""


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.option(
    "--host", help="Dashboard address (default from the rule file: 127.0.0.1)."
)
@click.option(
    "--port", type=PORT, help="Dashboard port (default from the rule file: 5000)."
)
def run(rules: str, host: str | None, port: int | None) -> None:
    """Watch the database, check every write and fix violations until stopped."""
    settings = read_settings(rules)
    settings = with_dashboard(settings, host, port)
    configure_logging(settings.logging.level, settings.logging.file)
    run_async(lambda: serve_monitor(settings))


def with_dashboard(settings: Settings, host: str | None, port: int | None) -> Settings:
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if not changes:
        return settings
    dashboard = settings.dashboard.model_copy(update=changes)
    return settings.model_copy(update={"dashboard": dashboard})


async def serve_monitor(
    settings: Settings,
    *,
    memory: bool = False,
    before_run: Any = None,
    prepare: Any = None,
) -> None:
    """Run the monitor until SIGINT or SIGTERM.

    `prepare(db)` runs once connected (the demo loads its data there);
    `before_run(monitor, uri, stop)` runs beside the monitor.
    """
    from streamheal.monitor import Monitor, connect
    from streamheal.web import resolve_token

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async with database_uri(settings, memory=memory) as uri:
        client, hello = await connect(uri)
        try:
            if prepare is not None:
                await prepare(client[settings.mongodb.database])
            monitor = Monitor(
                settings, client, uri=uri, hello=hello, token=resolve_token()
            )
            extra = (
                []
                if before_run is None
                else [asyncio.create_task(before_run(monitor, uri, stop))]
            )
            await monitor.run(stop)
            for task in extra:
                task.cancel()
            await asyncio.gather(*extra, return_exceptions=True)
        finally:
            await client.close()


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text"
)
def check(rules: str, output_format: str) -> None:
    """Sweep once, report the violations, fix nothing.

    Exit status: 0 clean, 1 violations found, 2 configuration or connection
    error, or a rule the server could not answer.
    """
    settings = read_settings(rules)
    configure_logging("warning", None, console=False)
    report = run_async(lambda: sweep_once(settings))
    if output_format == "json":
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        print_text_report(report)
    if report["failed_rules"]:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_VIOLATIONS if report["summary"]["total"] else EXIT_CLEAN)


async def sweep_once(settings: Settings) -> dict[str, Any]:
    """Sweep every rule once and build the report `check` prints.

    A rule whose question the server rejects goes into `failed_rules` with
    the server's error, and the other rules still run; what it found before
    failing is left out, since its answer is incomplete. A connection lost
    during the sweep ends it with ConnectionFailedError.
    """
    from streamheal.monitor import RECHECK_ERRORS, connect
    from streamheal.watchers import is_transient

    violations: list[dict[str, Any]] = []
    by_rule: dict[str, int] = {spec.name: 0 for spec in settings.rules}
    failed_rules: list[dict[str, str]] = []
    async with database_uri(settings) as uri:
        client, _ = await connect(uri)
        try:
            db = client[settings.mongodb.database]
            for rule in settings.build_rules():
                try:
                    found = await describe_sweep(rule, db)
                except RECHECK_ERRORS as exc:
                    error = describe_rule_error(exc)
                    if is_transient(exc):
                        reason = (
                            f"the sweep of rule {rule.name!r} was interrupted: {error}"
                        )
                        raise ConnectionFailedError(redact_uri(uri), reason) from None
                    failed_rules.append({"rule": rule.name, "error": error})
                    continue
                violations += found
                by_rule[rule.name] = len(found)
        finally:
            await client.close()

    return {
        "violations": violations,
        "summary": {"total": len(violations), "by_rule": by_rule},
        "failed_rules": failed_rules,
    }


async def describe_sweep(rule: Rule, db: Database) -> list[dict[str, Any]]:
    """Every violation one rule's sweep finds, as the report shows it."""
    found = []
    async for violation in rule.sweep(db):
        described = describe_violation(violation)
        described["fix"] = rule.describe_fix()
        found.append(described)
    return found


def describe_rule_error(exc: Exception) -> str:
    """A rule's failure as one line: a server error keeps its name and code."""
    # The server's full reply can hold document values, and the driver's
    # timeout text the whole topology: neither belongs in a report line.
    text = str(exc).split(", full error: ")[0].split(", Timeout:")[0]
    name = type(exc).__name__
    code = getattr(exc, "code", None)
    if code is not None:
        return f"{name} (code {code}): {text}"
    return f"{name}: {text}" if text else name


REPORT_DOCUMENTS_SHOWN = 5


def documents_text(documents: list[Any], shown: int) -> str:
    """The first `shown` document ids as JSON, then how many more there are."""
    text = ", ".join(json.dumps(document) for document in documents[:shown])
    more = len(documents) - shown
    return text + (f" and {more} more" if more > 0 else "")


def print_text_report(report: dict[str, Any]) -> None:
    for violation in report["violations"]:
        documents = documents_text(violation["documents"], REPORT_DOCUMENTS_SHOWN)
        click.echo(
            f"[{violation['severity']}] {violation['rule']} ({violation['kind']}) "
            f"{violation['collection']}: {violation['description']}"
            + (f" — {documents}" if documents else "")
        )
    summary = report["summary"]
    click.echo(f"{summary['total']} violation(s)")
    for name, count in summary["by_rule"].items():
        click.echo(f"  {name}: {count}")
    for failure in report["failed_rules"]:
        click.echo(f"rule {failure['rule']} failed: {failure['error']}")


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many fixes to list.",
)
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text"
)
def history(rules: str, limit: int, output_format: str) -> None:
    """List fixes, newest first, with their ids."""
    settings = read_settings(rules)
    records = run_async(lambda: read_history(settings, limit))
    if output_format == "json":
        click.echo(json.dumps(to_json_value(records)))
        return
    if not records:
        click.echo("No fixes recorded yet.")
    for record in records:
        created = record.get("created_at")
        stamp = created.isoformat(timespec="seconds") if created else "-"
        click.echo(
            f"{record['_id']}  {stamp}  {record.get('status', '-'):<11} "
            f"{record.get('rule')}{where_of(record)}: "
            f"{record.get('summary', record.get('error', ''))}"
        )


HISTORY_DOCUMENTS_SHOWN = 3


def where_of(record: dict[str, Any]) -> str:
    """The ` (collection, documents a, b)` of a history line, from the record."""
    parts = []
    if record.get("collection"):
        parts.append(str(record["collection"]))
    documents = to_json_value(record.get("documents") or [])
    if documents:
        parts.append(f"documents {documents_text(documents, HISTORY_DOCUMENTS_SHOWN)}")
    return f" ({', '.join(parts)})" if parts else ""


async def read_history(settings: Settings, limit: int) -> list[dict[str, Any]]:
    from streamheal.fixer import list_fixes
    from streamheal.monitor import connect

    async with database_uri(settings) as uri:
        client, _ = await connect(uri)
        try:
            return await list_fixes(client[settings.mongodb.database], limit)
        finally:
            await client.close()


@main.command()
@click.argument("fix_id")
@click.argument("rules", type=click.Path(dir_okay=False))
def rollback(fix_id: str, rules: str) -> None:
    """Restore the documents a fix changed or removed, exactly as they were."""
    settings = read_settings(rules)
    record = run_async(lambda: undo(settings, fix_id))
    click.echo(
        f"Rolled back fix {fix_id} ({record.get('rule')}: {record.get('summary')})."
    )


async def undo(settings: Settings, fix_id: str) -> dict[str, Any]:
    from streamheal.fixer import rollback_fix, supports_transactions
    from streamheal.monitor import connect

    async with database_uri(settings) as uri:
        client, _ = await connect(uri)
        try:
            use_transaction = await supports_transactions(client)
            return await rollback_fix(
                client,
                client[settings.mongodb.database],
                fix_id,
                use_transaction=use_transaction,
            )
        finally:
            await client.close()


@main.command()
@click.option(
    "--port",
    type=PORT,
    default=5000,
    show_default=True,
    help="Dashboard port (0: any free port).",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False),
    help="Rule file (default: the bundled demo rules).",
)
def demo(port: int, rules_path: str | None) -> None:
    """Everything at once: embedded server, sample data, live traffic, dashboard."""
    from streamheal.demo import DEMO_RULES, run_demo

    settings = in_memory(read_settings(rules_path or str(DEMO_RULES)))
    settings = with_dashboard(settings, None, port)
    configure_logging(settings.logging.level, settings.logging.file)
    click.echo(
        "streamheal demo: an embedded server in memory, sample data, live writes",
        err=True,
    )
    if port:
        url = f"http://{settings.dashboard.host}:{port}/"
        click.echo(f"streamheal demo: dashboard at {url} (Ctrl+C stops)", err=True)
    run_async(lambda: run_demo(settings))


def in_memory(settings: Settings) -> Settings:
    """The settings on a fresh embedded server in memory, whatever the file says.

    The demo drops and seeds its collections: it must never do that to a
    database the rule file (or a MONGODB_URI left in the shell) points at.
    """
    mongodb = settings.mongodb.model_copy(
        update={"uri": EMBEDDED_URI, "storage": MEMORY_STORAGE}
    )
    return settings.model_copy(update={"mongodb": mongodb})


if __name__ == "__main__":
    main()
