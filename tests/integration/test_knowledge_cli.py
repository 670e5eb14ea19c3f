"""`switchboard ingest`: files and folders into the knowledge base, idempotently."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from server.cli import main
from stores.sql.database import open_database
from stores.sql.models import Document
from tests.integration.knowledge_support import make_pdf, unique_collection


def _sources(database_url: str, collection: str) -> dict[str, str]:
    async def fetch() -> dict[str, str]:
        async with open_database(database_url) as database, database.sessions() as session:
            rows = await session.scalars(select(Document).where(Document.collection == collection))
            return {Path(row.source).name: row.doc_type for row in rows}

    return asyncio.run(fetch())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of documents: nested, with a hidden file and a type that is not supported."""
    root = tmp_path / "docs"
    (root / "nested").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "guide.md").write_text("# Guide\n\nHow to start the server.\n", encoding="utf-8")
    (root / "notes.txt").write_text("Plain notes about configuration.\n", encoding="utf-8")
    (root / "nested" / "page.html").write_text(
        "<html><body><p>An HTML page about the API.</p></body></html>", encoding="utf-8"
    )
    (root / "nested" / "manual.pdf").write_bytes(make_pdf(["A PDF manual about search."]))
    (root / "nested" / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (root / ".hidden" / "secret.md").write_text("# Secret\n", encoding="utf-8")
    return root


@pytest.fixture
def environment(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the command at this module's database and a data folder of this test's own."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MIGRATE_ON_START", "false")
    return database_url


def test_ingest_a_folder_then_again_changes_nothing(
    environment: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collection = unique_collection("cli")

    assert main(["ingest", str(folder), "--collection", collection]) == 0
    first = capsys.readouterr().out
    assert main(["ingest", str(folder), "--collection", collection]) == 0
    second = capsys.readouterr().out

    assert "4 created, 0 updated, 0 unchanged, 0 failed" in first
    assert "0 created, 0 updated, 4 unchanged, 0 failed" in second
    assert _sources(environment, collection) == {
        "guide.md": "md",
        "notes.txt": "txt",
        "page.html": "html",
        "manual.pdf": "pdf",
    }


def test_ingest_reports_a_changed_file_and_a_bad_one(
    environment: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collection = unique_collection("cli")
    guide = folder / "guide.md"
    assert main(["ingest", str(guide), "--collection", collection]) == 0
    guide.write_text("# Guide\n\nHow to stop the server.\n", encoding="utf-8")
    capsys.readouterr()

    code = main(
        ["ingest", str(guide), str(folder / "nested" / "sheet.xlsx"), "--collection", collection]
    )

    out = capsys.readouterr().out
    assert code == 1
    assert "0 created, 1 updated, 0 unchanged, 1 failed" in out
    assert "unsupported file type '.xlsx'" in out


def test_ingest_refuses_a_missing_path_and_a_bad_collection(environment: str) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main(["ingest", "/no/such/place"])
    with pytest.raises(SystemExit, match="collection"):
        main(["ingest", ".", "--collection", "bad name"])


def test_reindex_rebuilds_stale_collections_from_their_files_then_has_nothing_to_do(
    environment: str,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collection = unique_collection("cli")
    monkeypatch.setenv("CHUNK_SIZE", "48")
    assert main(["ingest", str(folder), "--collection", collection]) == 0
    monkeypatch.delenv("CHUNK_SIZE")  # the default chunker: the collection is stale now
    capsys.readouterr()

    assert main(["reindex", collection]) == 0
    rebuilt = capsys.readouterr()
    assert main(["reindex"]) == 0
    again = capsys.readouterr().out

    assert f"collection {collection!r}: rebuilt 4 documents into" in rebuilt.out
    assert "doc" in rebuilt.err  # the progress bar
    assert "every collection is current: nothing to rebuild" in again
    with pytest.raises(SystemExit, match="COLLECTION"):
        main(["reindex", "bad name"])
