"""Shared fixtures: one SecantusDB process per session, a database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from pymongo import AsyncMongoClient

from streamheal.embedded import EmbeddedServer


_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[EmbeddedServer]:
    """A SecantusDB server on a free loopback port, with test commands enabled."""
    server = EmbeddedServer(extra_args=["--enable-test-commands"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: EmbeddedServer) -> str:
    return mongo_server.uri


@pytest.fixture(scope="session")
async def mongo_client(
    mongo_uri: str,
) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, tz_aware=True
    )
    yield client
    await client.close()


@pytest.fixture
def database_name() -> str:
    """A database name no other test uses, so tests never see each other's data."""
    return f"t{os.getpid()}_{next(_database_numbers)}"


@pytest.fixture
async def db(
    mongo_client: AsyncMongoClient[dict[str, Any]], database_name: str
) -> AsyncIterator[Any]:
    database = mongo_client[database_name]
    yield database
    await mongo_client.drop_database(database_name)


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults and no bound context."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def profiling(db: Any) -> AsyncIterator[None]:
    """Every operation of the test database is profiled; the old setting returns."""
    status = await db.command("profile", -1)
    await db.command("profile", 1, slowms=0)
    yield
    await db.command("profile", status["was"], slowms=status["slowms"])
