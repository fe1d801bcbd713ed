"""`streamheal check` on real-world data finds exactly the flaws that are there.

Each dataset is loaded into its own database on the test server, the example
rule file is checked by the command line in a subprocess, and every rule's
violations are compared with an independent answer: plain Python over the JSON
files, reading the rule file with PyYAML and sharing no code with streamheal.
The counts are also written out below; they must agree with that computation
too, so a change to the data, the rule files or the Python cannot pass quietly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from bson import Decimal128, Int64, ObjectId, json_util
from pymongo import MongoClient

from tests.datasets import REPO_ROOT, load_dataset, read_dataset


EXAMPLES = REPO_ROOT / "examples"
CHECK_TIMEOUT_S = 300.0
EXIT_CLEAN = 0
EXIT_VIOLATIONS = 1

Documents = list[dict[str, Any]]
Data = Mapping[str, Documents]
Subject = frozenset[str]

# What each rule of the example files finds, written out. The numbers were
# worked out from the files (see the functions below, which recompute them);
# the comments say what the violations are.
KNOWN_COUNTS: dict[str, dict[str, int]] = {
    "sample_mflix": {
        # Trio 1950 four times; Robin Hood, Best Years of Our Lives, Torment,
        # Quartet, Siraa Fil-Wadi, Carne de horca, Grand Maneuver twice.
        "movies-unique-imdb-id": 8,
        "movies-required-listing-fields": 3,  # 1 without runtime, 2 without genres
        "movies-missing-plot": 51,
        "movies-lastupdated-is-date": 1000,  # every one is a string
        "movies-imdb-rating-is-number": 1,  # La nao capitana: ""
        "movies-imdb-votes-is-number": 1,  # the same movie
        "movies-imdb-rating-range": 0,
        "movies-year-range": 0,
        "movies-runtime-positive": 0,
        "movies-rated-allowed": 5,  # "Approved" beside 429 "APPROVED"
        "movies-type-allowed": 0,
        "comments-movie-exists": 230,  # mostly the subset's doing (datasets README)
        "comments-user-exists": 0,
        "users-unique-email": 0,
        "users-password-is-bcrypt": 2,  # "somehashedpw" and "foobar"
        "sessions-user-exists": 1,  # the one session's user is not a user
        "theaters-unique-theater-id": 0,
        "theaters-zipcode-format": 19,  # four digits: the leading 0 is lost
        "theaters-street2-null": 189,
        "slow-reference-lookups": 0,  # nothing is profiled in these tests
    },
    "sample_analytics": {
        "accounts-unique-account-id": 1,  # 627788, held by two customers
        "accounts-products-allowed": 0,
        "accounts-limit-range": 0,
        "customers-required-identity": 0,
        "customers-unique-username": 3,  # mirandajones, ihill, patrick05
        "customers-unique-email": 1,  # jennifer49@gmail.com
        "customers-email-format": 0,
        "customers-birthdate-range": 0,
        "customers-accounts-exist": 0,
        "slow-customer-lookups": 0,
    },
    # The clean control: chinook.rules.yaml lists its 22 rules, all at 0.
    "chinook": {},
}

CASES = [
    pytest.param("sample_mflix", "mflix.rules.yaml", EXIT_VIOLATIONS, id="mflix"),
    pytest.param(
        "sample_analytics", "analytics.rules.yaml", EXIT_VIOLATIONS, id="analytics"
    ),
    pytest.param("chinook", "chinook.rules.yaml", EXIT_CLEAN, id="chinook"),
]


# Reading documents the way MongoDB does, for the paths the rule files use.

MISSING = object()


def value_at(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path through sub-documents, or MISSING."""
    value: Any = document
    for part in path.split("."):
        if isinstance(value, list):
            raise NotImplementedError(
                f"{path} runs through an array; no example rule does"
            )
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def is_null(value: Any) -> bool:
    """Absent or null: what MongoDB's `{field: null}` matches."""
    return value is MISSING or value is None


def bson_type(value: Any) -> str:
    """The name `$type` gives the BSON type this Python value is stored as."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if -(2**31) <= value < 2**31 else "long"
    names: list[tuple[type, str]] = [
        (float, "double"),
        (str, "string"),
        (dt.datetime, "date"),
        (Mapping, "object"),
        (list, "array"),
        (ObjectId, "objectId"),
        (Decimal128, "decimal"),
    ]
    for python_type, name in names:
        if isinstance(value, python_type):
            return name
    raise TypeError(f"no BSON type known for {value!r}")


def as_utc(moment: dt.datetime) -> dt.datetime:
    """Naive UTC, as BSON stores every date."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def comparable(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())  # YAML's date: midnight UTC
    return value


def family(value: Any) -> str:
    """The type family a range compares within."""
    value = comparable(value)
    if isinstance(value, bool):
        return "other"
    if isinstance(value, int | float | decimal.Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):
        return "date"
    return "other"


def subject_of(*documents: Mapping[str, Any]) -> Subject:
    return frozenset(str(document["_id"]) for document in documents)


# One function per rule kind: the violations' subjects (the _ids of the
# documents each violation is about), from the rule as the file states it.


def find_required(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    """Documents with any listed field absent, null or (by default) ""."""
    empty_is_missing = rule.get("empty_is_missing", True)

    def is_missing(value: Any) -> bool:
        return is_null(value) or (empty_is_missing and value == "")

    return {
        subject_of(document)
        for document in data[rule["collection"]]
        if any(is_missing(value_at(document, path)) for path in rule["fields"])
    }


def normalized(value: Any, steps: list[str]) -> Any:
    if not isinstance(value, str):
        return value
    for step in steps:
        value = value.lower() if step == "lowercase" else value.strip()
    return value


def find_unique(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    """Groups of two or more documents sharing the key; absent reads as null."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    steps = rule.get("normalize", [])
    for document in data[rule["collection"]]:
        values = [value_at(document, path) for path in rule["keys"]]
        if all(is_null(value) for value in values):
            continue  # documents missing every key field are not duplicates
        key = tuple(None if is_null(v) else normalized(v, steps) for v in values)
        groups[key].append(document)

    return {subject_of(*group) for group in groups.values() if len(group) > 1}


def find_reference(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    """Documents holding a non-null reference (or array element) with no parent."""
    parent, _, parent_field = rule["references"].partition(".")
    existing = set()
    for document in data[parent]:
        value = value_at(document, parent_field or "_id")
        if value is not MISSING:
            existing.update(value if isinstance(value, list) else [value])

    found = set()
    for document in data[rule["collection"]]:
        value = value_at(document, rule["field"])
        if value is MISSING:
            continue
        references = value if isinstance(value, list) else [value]
        if any(ref is not None and ref not in existing for ref in references):
            found.add(subject_of(document))
    return found


def find_bad_values(
    rule: Mapping[str, Any],
    data: Data,
    is_bad: Callable[[Any], bool],
    *,
    elements: bool,
) -> set[Subject]:
    """Documents whose field (or, for arrays, any non-null element) is bad.

    Absent and null values are `required`'s question, never a value kind's.
    """
    found = set()
    for document in data[rule["collection"]]:
        value = value_at(document, rule["field"])
        if is_null(value):
            continue
        if elements and isinstance(value, list):
            bad = any(item is not None and is_bad(item) for item in value)
        else:
            bad = is_bad(value)
        if bad:
            found.add(subject_of(document))
    return found


def find_allowed(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    allowed = rule["values"]
    assert all(isinstance(value, str) for value in allowed), (
        "only text values are mirrored"
    )
    return find_bad_values(
        rule, data, lambda value: value not in allowed, elements=True
    )


def find_type(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    accepted = set()
    for name in rule["types"]:
        accepted |= {"int", "long", "double", "decimal"} if name == "number" else {name}
    return find_bad_values(
        rule, data, lambda value: bson_type(value) not in accepted, elements=False
    )


def find_range(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    """Values of the bounds' type family outside them; other types are not judged."""
    low, high = rule.get("min"), rule.get("max")
    bounds_family = family(low if low is not None else high)

    def is_outside(value: Any) -> bool:
        if family(value) != bounds_family:
            return False
        value = comparable(value)
        return (low is not None and value < comparable(low)) or (
            high is not None and value > comparable(high)
        )

    return find_bad_values(rule, data, is_outside, elements=True)


def find_pattern(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    flags = 0
    for option in rule.get("options", ""):
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[option]
    regex = re.compile(rule["regex"], flags)
    return find_bad_values(
        rule,
        data,
        lambda value: isinstance(value, str) and not regex.search(value),
        elements=True,
    )


def street2_is_null(theater: Mapping[str, Any]) -> bool:
    address = theater["location"]["address"]
    return "street2" in address and address["street2"] is None


# A query rule's filter, written again as a Python predicate, by rule name.
QUERY_PREDICATES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "theaters-street2-null": street2_is_null,
}


def find_query(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    matches = QUERY_PREDICATES[rule["name"]]
    return {
        subject_of(document)
        for document in data[rule["collection"]]
        if matches(document)
    }


def find_slow_queries(rule: Mapping[str, Any], data: Data) -> set[Subject]:
    """None: profiling is off on the test server, so system.profile is empty."""
    return set()


FINDERS: dict[str, Callable[[Mapping[str, Any], Data], set[Subject]]] = {
    "allowed": find_allowed,
    "pattern": find_pattern,
    "query": find_query,
    "range": find_range,
    "reference": find_reference,
    "required": find_required,
    "slow_query": find_slow_queries,
    "type": find_type,
    "unique": find_unique,
}


def read_rules(rule_file: str) -> list[dict[str, Any]]:
    text = (EXAMPLES / rule_file).read_text(encoding="utf-8")
    rules: list[dict[str, Any]] = yaml.safe_load(text)["rules"]
    return rules


def expected_subjects(rule_file: str, data: Data) -> dict[str, set[Subject]]:
    return {
        rule["name"]: FINDERS[rule["kind"]](rule, data)
        for rule in read_rules(rule_file)
    }


def reported_subjects(report: Mapping[str, Any]) -> dict[str, set[Subject]]:
    found: dict[str, set[Subject]] = defaultdict(set)
    for violation in report["violations"]:
        ids = json_util.loads(json.dumps(violation["documents"]))
        found[violation["rule"]].add(frozenset(str(document_id) for document_id in ids))
    return found


# Running the command line against a loaded database.


@pytest.fixture
def load(mongo_uri: str) -> Iterator[Callable[[str], str]]:
    """Load a dataset into a database of its own; give that database's name."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    loaded: list[str] = []

    def load_into_fresh_database(dataset: str) -> str:
        name = f"real_{dataset}_{os.getpid()}"
        load_dataset(client[name], dataset)
        loaded.append(name)
        return name

    yield load_into_fresh_database
    for name in loaded:
        client.drop_database(name)
    client.close()


def run_check(
    rule_file: str, database: str, mongo_uri: str, tmp_path: Path
) -> tuple[int, Any]:
    """`streamheal check --format json` on a copy of the file aimed at `database`."""
    text = (EXAMPLES / rule_file).read_text(encoding="utf-8")
    text, replaced = re.subn(r"(?m)^(  database: ).*$", rf"\g<1>{database}", text)
    assert replaced == 1, f"{rule_file} should name its database once"
    rules_copy = tmp_path / rule_file
    rules_copy.write_text(text, encoding="utf-8")

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamheal.cli",
            "check",
            str(rules_copy),
            "--format",
            "json",
        ],
        env={**os.environ, "MONGODB_URI": mongo_uri},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode in (EXIT_CLEAN, EXIT_VIOLATIONS), completed.stderr
    return completed.returncode, json.loads(completed.stdout)


@pytest.mark.parametrize(("dataset", "rule_file", "exit_code"), CASES)
def test_known_counts_agree_with_the_computation(
    dataset: str, rule_file: str, exit_code: int
) -> None:
    """The written-out counts are what plain Python finds in the files."""
    expected = expected_subjects(rule_file, read_dataset(dataset))
    computed = {name: len(subjects) for name, subjects in expected.items()}
    rule_names = [rule["name"] for rule in read_rules(rule_file)]
    # An empty entry means every rule of the file finds nothing.
    known = KNOWN_COUNTS[dataset] or dict.fromkeys(rule_names, 0)

    assert computed == known
    assert (sum(known.values()) > 0) == (exit_code == EXIT_VIOLATIONS)


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "rule_file", "exit_code"), CASES)
def test_check_reports_exactly_the_flaws_in_the_data(
    load: Callable[[str], str],
    mongo_uri: str,
    tmp_path: Path,
    dataset: str,
    rule_file: str,
    exit_code: int,
) -> None:
    """Every rule reports the same violations, about the same documents, as Python."""
    expected = expected_subjects(rule_file, read_dataset(dataset))
    database = load(dataset)

    returncode, report = run_check(rule_file, database, mongo_uri, tmp_path)

    counts = {name: len(subjects) for name, subjects in expected.items()}
    assert report["summary"]["by_rule"] == counts
    assert report["summary"]["total"] == sum(counts.values())
    assert reported_subjects(report) == {
        name: subjects for name, subjects in expected.items() if subjects
    }
    assert returncode == exit_code
    if exit_code == EXIT_CLEAN:
        assert report["violations"] == []
