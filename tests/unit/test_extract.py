"""Text extraction: types by extension or media type, titles, HTML stripping, refusals."""

from __future__ import annotations

import pytest

from stores.extract import (
    UnreadableDocumentError,
    UnsupportedTypeError,
    doc_type_for,
    extract,
)


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("a.txt", None, "txt"),
        ("A.MD", None, "md"),
        ("notes.markdown", None, "md"),
        ("page.htm", None, "html"),
        ("x.PDF", "application/octet-stream", "pdf"),
        ("upload", "text/markdown; charset=utf-8", "md"),
        ("upload", "application/pdf", "pdf"),
    ],
)
def test_doc_type_comes_from_the_extension_else_the_media_type(
    filename: str, content_type: str | None, expected: str
) -> None:
    assert doc_type_for(filename, content_type) == expected


@pytest.mark.parametrize(
    ("filename", "content_type", "named"),
    [
        ("deck.pptx", "text/plain", "'.pptx'"),
        ("archive.tar.gz", None, "'.gz'"),
        ("upload", "image/png", "image/png"),
        ("upload", None, "not given"),
    ],
)
def test_unsupported_types_are_named_in_the_error(
    filename: str, content_type: str | None, named: str
) -> None:
    with pytest.raises(UnsupportedTypeError, match="unsupported file type") as raised:
        doc_type_for(filename, content_type)
    assert named in str(raised.value)
    assert raised.value.status == 415


def test_html_keeps_visible_text_and_the_title_only() -> None:
    page = (
        b"<html><head><title> The  Title </title><style>b{}</style></head><body>"
        b"<script>alert('x')</script><h1>Head</h1><p>One &amp; two</p><ul><li>a</li><li>b</li>"
        b"</ul><noscript>hidden</noscript></body></html>"
    )
    result = extract(page, filename="p.html")

    assert result.title == "The Title"
    assert result.text == "Head\n\nOne & two\n\na\n\nb"
    assert result.doc_type == "html"


def test_markdown_title_is_the_first_heading_else_the_file_name() -> None:
    assert extract(b"intro\n\n## Setup ##\n\ntext", filename="a.md").title == "Setup"
    assert extract(b"no heading here", filename="notes.md").title == "notes"
    assert extract(b"# Not a title in txt", filename="plain.txt").title == "plain"


def test_text_decodes_utf8_with_bom_and_falls_back_to_cp1252() -> None:
    assert extract("\ufeffcafé".encode(), filename="a.txt").text == "café"
    assert extract("café".encode("cp1252"), filename="b.txt").text == "café"


@pytest.mark.parametrize(
    ("data", "filename", "reason"),
    [
        (b"", "a.txt", "empty"),
        (b" \n\t ", "a.md", "empty"),
        (b"\x00\x01\x02binary", "a.txt", "binary"),
        (b"<html><script>x</script></html>", "a.html", "no text"),
        (b"hello", "a.pdf", "not a PDF"),
        (b"%PDF-1.4\ntruncated", "a.pdf", "corrupt PDF"),
    ],
)
def test_unreadable_files_are_refused_with_the_reason(
    data: bytes, filename: str, reason: str
) -> None:
    with pytest.raises(UnreadableDocumentError, match=reason) as raised:
        extract(data, filename=filename)
    assert raised.value.status == 422
    assert raised.value.field == "file"
