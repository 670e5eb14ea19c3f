"""`switchboard ingest PATH...` and `switchboard reindex`: fill and rebuild the knowledge base."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from tqdm import tqdm  # type: ignore[import-untyped]

from server.resources import open_resources
from server.settings import Settings, load_settings
from stores.errors import StoreError
from stores.extract import DOC_TYPES
from stores.knowledge import ReindexResult, check_collection_name
from stores.sql.collections import ensure_system_collection
from stores.sql.models import Document


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """The files to ingest: each file named, and every supported file under each folder.

    Hidden files and folders (names starting with `.`) inside a folder are skipped.

    Raises:
        SystemExit: A path does not exist.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    found
                    for found in path.rglob("*")
                    if found.is_file()
                    and found.suffix.lower() in DOC_TYPES
                    and not any(part.startswith(".") for part in found.relative_to(path).parts)
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    unique: dict[Path, None] = dict.fromkeys(f.resolve() for f in files)
    return list(unique)


def local_store_busy(settings: Settings, error: RuntimeError) -> SystemExit:
    """The message for qdrant-client's refusal to open a folder another process holds."""
    if "already accessed" not in str(error):
        raise error
    return SystemExit(
        f"the Qdrant local store in {settings.data_dir / 'qdrant'} is open in another "
        "process (a running server?): stop it, or set QDRANT_URL to a Qdrant server"
    )


async def ingest_files(
    settings: Settings, files: Sequence[Path], *, collection: str | None, progress: bool = True
) -> Counter[str]:
    """Ingest `files` into `collection`, one by one, with a progress bar.

    Returns:
        How many documents were `created`, `updated`, `unchanged` and `failed`.
    """
    counts: Counter[str] = Counter()
    try:
        async with open_resources(settings) as resources:
            # What the operator ingests is the server's own: everyone reads it, admins change it.
            await ensure_system_collection(
                resources.database, collection or settings.knowledge_default_collection
            )
            with tqdm(files, unit="file", disable=not progress) as bar:
                for path in bar:
                    bar.set_postfix_str(path.name, refresh=False)
                    try:
                        result = await resources.knowledge.ingest_path(path, collection=collection)
                    except (StoreError, OSError) as error:
                        counts["failed"] += 1
                        tqdm.write(f"failed: {path}: {error}")
                        continue
                    counts[result.status] += 1
    except RuntimeError as error:
        raise local_store_busy(settings, error) from error
    return counts


async def reindex_collections(
    settings: Settings, names: Sequence[str], *, force: bool, progress: bool = True
) -> list[ReindexResult]:
    """Rebuild the collections named (all stale ones when none is), with a progress bar.

    Returns:
        One result per collection looked at.
    """
    try:
        async with open_resources(settings) as resources:
            knowledge = resources.knowledge
            await knowledge.check_dimensions()
            targets = list(names) or sorted(knowledge.stale)
            async with knowledge.database.sessions() as session:
                total = await session.scalar(
                    select(func.count())
                    .select_from(Document)
                    .where(Document.collection.in_(targets))
                )
            results = []
            with tqdm(total=total or 0, unit="doc", disable=not progress) as bar:
                for name in targets:
                    bar.set_postfix_str(name, refresh=False)
                    results.append(await knowledge.reindex(name, force=force, progress=bar.update))
            return results
    except RuntimeError as error:
        raise local_store_busy(settings, error) from error


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest .txt, .md, .html and .pdf files (folders: recursively) into the knowledge base."""
    settings = load_settings()
    collection = args.collection or settings.knowledge_default_collection
    try:
        check_collection_name(collection)
    except ValueError as error:
        raise SystemExit(f"--collection: {error}") from error
    files = collect_files([Path(p) for p in args.paths])
    if not files:
        print("no .txt, .md, .html or .pdf files found")
        return 1
    counts = asyncio.run(ingest_files(settings, files, collection=collection))
    print(
        f"collection {collection!r}: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['failed']} failed"
    )
    return 1 if counts["failed"] else 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild knowledge collections with the current embedder, chunker and layout.

    With no COLLECTION, every stale collection (the ones the server names at startup).
    """
    settings = load_settings()
    for name in args.collections:
        try:
            check_collection_name(name)
        except ValueError as error:
            raise SystemExit(f"COLLECTION: {error}") from error
    try:
        results = asyncio.run(reindex_collections(settings, args.collections, force=args.force))
    except StoreError as error:
        raise SystemExit(str(error)) from error
    if not results:
        print("every collection is current: nothing to rebuild")
    for result in results:
        if result.status == "current":
            print(f"collection {result.collection!r}: current, left alone (--force rebuilds it)")
            continue
        print(
            f"collection {result.collection!r}: rebuilt {result.documents} documents "
            f"into {result.chunks} chunks"
        )
        for source in result.missing:
            print(f"  not rebuilt (no source file, no stored chunks): {source}")
    return 1 if any(r.missing for r in results) else 0


def add_ingest_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `switchboard ingest` on the sub-command parsers `sub`."""
    ingest = sub.add_parser(
        "ingest", help="ingest documents into the knowledge base", description=cmd_ingest.__doc__
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to ingest")
    ingest.add_argument(
        "--collection", help="knowledge base to ingest into (default: KNOWLEDGE_DEFAULT_COLLECTION)"
    )
    ingest.set_defaults(func=cmd_ingest)

    reindex = sub.add_parser(
        "reindex",
        help="rebuild knowledge collections (after the embedder or chunker changed)",
        description=cmd_reindex.__doc__,
    )
    reindex.add_argument(
        "collections", nargs="*", metavar="COLLECTION", help="collections (default: the stale)"
    )
    reindex.add_argument("--force", action="store_true", help="rebuild current ones too")
    reindex.set_defaults(func=cmd_reindex)
