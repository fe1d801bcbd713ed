"""`streamheal demo`: the whole product on an embedded server, in one command.

It loads a small shop (users, orders, products) seeded with every kind of
bad data the rules look for, keeps a light stream of writes going (about one
in four of them bad), and runs the monitor with the root `rules.yaml`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from streamheal.config import Settings


# The root rules.yaml, linked into the package so an installed streamheal has it.
DEMO_RULES = Path(__file__).resolve().parent / "demo.rules.yaml"
TRAFFIC_INTERVAL_S = 1.5
SEED = 7
USERS = 300
ORDERS = 5000
PRODUCTS = 60
STATUSES = ("pending", "paid", "shipped", "delivered")
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
)

log = structlog.get_logger("streamheal.demo")


def make_user(rng: random.Random, number: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return {
        "_id": number,
        "name": f"{first} {last}",
        "email": f"{first}.{last}{number}@example.com".lower(),
        "country": rng.choice(["NL", "DE", "FR", "GB", "US"]),
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        + dt.timedelta(hours=number),
    }


def make_order(rng: random.Random, number: int, user_count: int) -> dict[str, Any]:
    return {
        "_id": number,
        "user_id": rng.randrange(1, user_count + 1),
        "product_id": rng.randrange(1, PRODUCTS + 1),
        "quantity": rng.randrange(1, 5),
        "total": round(rng.uniform(5, 400), 2),
        "status": rng.choice(STATUSES),
    }


def make_product(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "_id": number,
        "sku": f"SKU-{number:05d}",
        "title": f"Product {number}",
        "price": round(rng.uniform(1, 250), 2),
        "stock": rng.randrange(0, 500),
    }


def seed_documents(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """A clean shop, then a handful of every kind of bad data."""
    users = [make_user(rng, n) for n in range(1, USERS + 1)]
    orders = [make_order(rng, n, USERS) for n in range(1, ORDERS + 1)]
    products = [make_product(rng, n) for n in range(1, PRODUCTS + 1)]

    # The same person signed up twice, once with different case and spaces.
    users.append(
        {**users[4], "_id": USERS + 1, "email": "  " + users[4]["email"].upper()}
    )
    users.append({**users[9], "_id": USERS + 2})
    # Records missing what the application needs.
    users.append({"_id": USERS + 3, "email": "nameless@example.com", "country": "NL"})
    users.append({"_id": USERS + 4, "name": "No Mail", "email": "", "country": "DE"})
    # Orders pointing at users who do not exist; a status no one allowed.
    orders[10]["user_id"] = 99_999
    orders[11]["user_id"] = 88_888
    orders[12]["status"] = "Shipped!"
    orders[13]["total"] = -25.0
    # A price stored as text, and a negative stock.
    products[3]["price"] = "19.99"
    products[5]["stock"] = -4
    return {"users": users, "orders": orders, "products": products}


async def load_demo_data(db: Any) -> None:
    rng = random.Random(SEED)
    for name, documents in seed_documents(rng).items():
        await db[name].drop()
        await db[name].insert_many(documents)
    # Pre-images let the reference rule see which user a delete removed.
    await db.command("collMod", "users", changeStreamPreAndPostImages={"enabled": True})


async def write_traffic(db: Any, stop: asyncio.Event) -> None:
    """A light stream of writes, some of them bad, until `stop` is set."""
    rng = random.Random()
    next_user = USERS + 100
    next_order = ORDERS + 100
    while not stop.is_set():
        try:
            next_user, next_order = await write_one(db, rng, next_user, next_order)
        except PyMongoError as exc:
            log.warning("demo_write_failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), TRAFFIC_INTERVAL_S)
        except TimeoutError:
            pass


async def write_one(
    db: Any, rng: random.Random, next_user: int, next_order: int
) -> tuple[int, int]:
    roll = rng.random()
    if roll < 0.06:
        existing = await db.users.find_one(
            {"email": {"$type": "string", "$ne": ""}}, skip=rng.randrange(50)
        )
        if existing:
            await db.users.insert_one(
                {**existing, "_id": next_user, "email": existing["email"].title()}
            )
            return next_user + 1, next_order
    if roll < 0.10:
        await db.orders.insert_one(
            {**make_order(rng, next_order, USERS), "user_id": 777_000 + next_order}
        )
        return next_user, next_order + 1
    if roll < 0.14:
        await db.orders.update_one(
            {"_id": rng.randrange(1, ORDERS)}, {"$set": {"status": "lost"}}
        )
        return next_user, next_order
    if roll < 0.17:
        await db.users.insert_one(
            {"_id": next_user, "email": f"anon{next_user}@example.com"}
        )
        return next_user + 1, next_order
    if roll < 0.20:
        await db.products.update_one(
            {"_id": rng.randrange(1, PRODUCTS)},
            {"$set": {"stock": -rng.randrange(1, 9)}},
        )
        return next_user, next_order
    if roll < 0.24:
        # A lookup by an unindexed field: the slow-query rule's material.
        await (
            db.orders.find({"status": "pending", "quantity": {"$gte": 3}})
            .sort("total", -1)
            .to_list(20)
        )
        return next_user, next_order
    if roll < 0.6:
        await db.orders.insert_one(make_order(rng, next_order, USERS))
        return next_user, next_order + 1
    await db.users.insert_one(make_user(rng, next_user))
    return next_user + 1, next_order


async def run_demo(settings: Settings) -> None:
    from streamheal.cli import serve_monitor

    async def traffic(monitor: Any, uri: str, stop: asyncio.Event) -> None:
        # The first sweep sees the seed data alone; live writes start after.
        await monitor.sweeper.first_sweep_done.wait()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            await write_traffic(client[settings.mongodb.database], stop)
        finally:
            await client.close()

    await serve_monitor(
        settings, memory=True, before_run=traffic, prepare=load_demo_data
    )
