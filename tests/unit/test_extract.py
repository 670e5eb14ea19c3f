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


def test_a_heading_full_of_unusual_spaces_is_read_in_linear_time() -> None:
    spaces = "\u2003\u2002\u205f" * 20_000  # cubic work for the regex this replaced
    text = f"# a{spaces}b {spaces} ##\n\nbody".encode()
    assert extract(text, filename="wide.md").title.startswith(f"a{spaces}b")
    assert extract(f"# a{spaces}b".encode(), filename="b.md").title == f"a{spaces}b"


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


def test_markdown_sections_follow_the_heading_tree_outside_code_fences() -> None:
    text = (
        "# Guide\n\nIntro.\n\n## Install ##\n\nSteps.\n\n### On Linux\n\nApt.\n\n"
        "```sh\n# not a heading\n```\n\n## C# tips\n\nTip.\n\nUsage\n-----\n\nRun it.\n"
    )
    extracted = extract(text.encode(), filename="g.md")
    assert extracted.title == "Guide"
    assert [(s.path, s.text) for s in extracted.sections] == [
        (("Guide",), "Intro."),
        (("Guide", "Install"), "Steps."),
        (("Guide", "Install", "On Linux"), "Apt.\n\n```sh\n# not a heading\n```"),
        (("Guide", "C# tips"), "Tip."),
        (("Guide", "Usage"), "Run it."),
    ]


def test_html_sections_follow_h1_to_h6() -> None:
    page = (
        b"<html><head><title>T</title></head><body><p>Before.</p><h1>Alpha</h1><p>One.</p>"
        b"<h3>Deep</h3><p>Two.</p><h2>Beta</h2><p>Three.</p><h1>Gamma</h1><p>Four.</p></body>"
    )
    extracted = extract(page, filename="p.html")
    assert [(s.path, s.text) for s in extracted.sections] == [
        ((), "Before."),
        (("Alpha",), "One."),
        (("Alpha", "Deep"), "Two."),
        (("Alpha", "Beta"), "Three."),
        (("Gamma",), "Four."),
    ]
    assert "Alpha" in extracted.text


def test_pdf_pages_are_sections() -> None:
    from tests.integration.knowledge_support import make_pdf

    extracted = extract(make_pdf(["First page.", "Second page."]), filename="m.pdf")
    assert [(s.path, s.text) for s in extracted.sections] == [
        (("Page 1",), "First page."),
        (("Page 2",), "Second page."),
    ]


@pytest.mark.timeout(60)
def test_hostile_markdown_is_parsed_in_linear_time() -> None:
    lines = [
        "# " + " " * 100_000 + "x",
        "#" * 100_000,
        "# " + "#" * 100_000 + " a",
        "-" * 100_000,
        "=" * 100_000,
    ]
    for line in lines:
        extracted = extract(f"Title\n{line}\n\nbody\n".encode(), filename="h.md")
        assert extracted.sections
