"""Load the real-world sample datasets into a database, as `mongoimport` would.

The data lives outside the repository (its licence does not let us ship it):
in `shared/datasets` beside the repository root, or wherever the environment
variable STREAMHEAL_DATASETS points. Each dataset is a folder; each file in it
is one collection, named after the file (`movies.json` is `movies`,
`Album.data.json` is `Album`). A file is either one JSON array or one document
per line, in canonical or relaxed Extended JSON; `bson.json_util` reads both.

Nothing but `_id` is indexed after loading, exactly as after `mongoimport`.

From a shell:

    python -m tests.datasets mongodb://127.0.0.1:27017 sample_mflix
    python -m tests.datasets mongodb://127.0.0.1:27017 chinook --database music
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import MongoClient
from pymongo.database import Database


DATASETS_ENV = "STREAMHEAL_DATASETS"
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SUFFIXES = (".data.json", ".json")
INSERT_BATCH = 1000


def datasets_dir() -> Path:
    """The folder that holds the dataset folders.

    STREAMHEAL_DATASETS wins when set; otherwise `shared/datasets` beside the
    repository, which is where CI puts its copy next to a fresh clone.
    """
    configured = os.environ.get(DATASETS_ENV)
    if configured:
        return Path(configured).expanduser()
    return REPO_ROOT.parent / "shared" / "datasets"


def collection_name(path: Path) -> str:
    """The collection a data file fills: its name without the JSON suffix."""
    for suffix in DATA_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name.removesuffix(suffix)
    raise ValueError(
        f"{path} is not a JSON data file (expected a name ending in .json)."
    )


def dataset_files(dataset: str) -> dict[str, Path]:
    """Collection name to data file, for every file of the dataset's folder."""
    folder = datasets_dir() / dataset
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Dataset folder {folder} does not exist; set {DATASETS_ENV} to the "
            "folder that holds the datasets."
        )
    files = sorted(folder.glob("*.json"))
    return {collection_name(path): path for path in files}


def read_documents(path: Path) -> list[dict[str, Any]]:
    """Every document of a data file, whether it is one array or one per line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        documents = json_util.loads(text)
    else:
        documents = [
            json_util.loads(line) for line in text.splitlines() if line.strip()
        ]
    if not all(isinstance(document, Mapping) for document in documents):
        raise ValueError(f"{path} holds something other than documents.")
    return [dict(document) for document in documents]


def read_dataset(dataset: str) -> dict[str, list[dict[str, Any]]]:
    """Collection name to its documents, read from the files (no server)."""
    return {name: read_documents(path) for name, path in dataset_files(dataset).items()}


def load_dataset(database: Database[Any], dataset: str) -> dict[str, int]:
    """Insert every collection of a dataset; return how many documents each got.

    Collections that already exist are dropped first, so loading twice gives
    the same database, not twice the documents.
    """
    loaded: dict[str, int] = {}
    for name, documents in read_dataset(dataset).items():
        database.drop_collection(name)
        for start in range(0, len(documents), INSERT_BATCH):
            database[name].insert_many(documents[start : start + INSERT_BATCH])
        loaded[name] = len(documents)

    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description="Load a sample dataset into MongoDB.")
    parser.add_argument("uri", help="connection string, e.g. mongodb://127.0.0.1:27017")
    parser.add_argument(
        "dataset", help="dataset folder name, e.g. sample_mflix or chinook"
    )
    parser.add_argument(
        "--database", help="database to fill (default: the dataset's name)"
    )
    arguments = parser.parse_args()

    with MongoClient(arguments.uri) as client:
        database = client[arguments.database or arguments.dataset]
        loaded = load_dataset(database, arguments.dataset)
    for name, count in loaded.items():
        print(f"{database.name}.{name}: {count} documents")


if __name__ == "__main__":
    main()
