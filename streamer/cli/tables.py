"""``streamer tables create``: ensure the DynamoDB tables (idempotent)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamer.config import load_settings
from streamer.store.tables import ensure_tables, table_definitions


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tables", help="manage the DynamoDB tables")
    p.add_argument(
        "action", choices=["create", "list"], help="create: ensure every table exists; list: names"
    )
    p.add_argument("--dynamodb-endpoint", help="DynamoDB endpoint URL (default: STREAMER_DYNAMODB_ENDPOINT)")
    p.add_argument("--table-prefix", help="table name prefix (default: STREAMER_TABLE_PREFIX or 'streamer')")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(dynamodb_endpoint=args.dynamodb_endpoint, table_prefix=args.table_prefix)
    if args.action == "list":
        for definition in table_definitions(settings=settings).values():
            print(definition["TableName"])
        return 0
    created = asyncio.run(ensure_tables(settings=settings))
    for definition in table_definitions(settings=settings).values():
        name = definition["TableName"]
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0
