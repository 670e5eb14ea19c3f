"""Text, title and sections (heading paths, PDF pages) of uploaded .txt, .md, .html, .pdf files."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from typing import ClassVar

from stores.chunking import Section
from stores.errors import StoreError

log = logging.getLogger(__name__)

# File extension → the doc_type stored with the document and its chunks.
DOC_TYPES: dict[str, str] = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
# Declared media type → doc_type, for uploads whose name has no extension.
MEDIA_TYPES: dict[str, str] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/pdf": "pdf",
}
SUPPORTED = ", ".join(sorted(DOC_TYPES))


class DocumentError(StoreError):
    """A document cannot be ingested as given; `field` names the part of the request at fault."""

    status = 422

    def __init__(self, message: str, *, field: str | None = "file") -> None:
        self.field = field
        super().__init__(message)


class UnsupportedTypeError(DocumentError):
    """The file is not one of the supported types (HTTP 415)."""

    status = 415


class UnreadableDocumentError(DocumentError):
    """The file is empty, corrupt, or has no text to index (HTTP 422)."""

    status = 422


class DocumentTooLargeError(DocumentError):
    """The file is over the upload limit (HTTP 413)."""

    status = 413


@dataclass(frozen=True, slots=True)
class Extracted:
    """The text of a document, its title, its doc_type and its sections in reading order."""

    text: str
    title: str
    doc_type: str
    sections: tuple[Section, ...] = ()


def doc_type_for(filename: str, content_type: str | None = None) -> str:
    """The doc_type of a file from its extension (or, lacking one, its media type).

    Args:
        filename: The file's name; only its extension matters.
        content_type: The media type the client declared, if any.

    Returns:
        One of `txt`, `md`, `html`, `pdf`.

    Raises:
        UnsupportedTypeError: For any other type; the message names it.
    """
    suffix = PurePath(filename).suffix.lower()
    if suffix in DOC_TYPES:
        return DOC_TYPES[suffix]
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not suffix and media in MEDIA_TYPES:
        return MEDIA_TYPES[media]
    if suffix:
        named = repr(suffix)
    else:
        named = f"{filename!r} (no extension, media type {media or 'not given'!r})"
    raise UnsupportedTypeError(f"unsupported file type {named}; supported: {SUPPORTED}")


_MARKDOWN_HEADING = re.compile(rb"^#{1,6}[ \t]+\S", re.MULTILINE)
SNIFF_BYTES = 8192


def sniffed_media_type(data: bytes) -> str:
    """The media type of a file by its content, for an upload that names no type (a multipart
    part without a filename, as schemathesis and some generated clients send files).

    `%PDF-` is a PDF; a leading `<` (`<!doctype html>`, `<html>`, any tag) is HTML; text with a
    markdown heading line (`# Title`) is markdown; anything else is plain text (which
    extraction refuses if it is binary).
    """
    head = data[:SNIFF_BYTES]
    lead = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if lead.startswith(b"%PDF-"):
        return "application/pdf"
    if lead.startswith(b"<"):
        return "text/html"
    if _MARKDOWN_HEADING.search(head):
        return "text/markdown"
    return "text/plain"


def upload_media_type(filename: str | None, declared: str | None, data: bytes) -> str | None:
    """The media type an upload is read as, when its filename's extension does not decide.

    A named file keeps today's rule (the extension, else the declared type). A part without
    a filename is typed by its Content-Type when that is exactly one supported type, and by
    its content otherwise (a list such as `text/plain, application/pdf` names no one type).
    """
    if filename:
        return declared
    media = (declared or "").split(";", 1)[0].strip().lower()
    if "," not in (declared or "") and media in MEDIA_TYPES:
        return media
    return sniffed_media_type(data)


def _decode(data: bytes, filename: str) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableDocumentError(f"{filename} is binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML page, its <title>, and its sections by <h1>-<h6>."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
         "footer", "pre", "blockquote", "hr", "dd", "dt"}
    )  # fmt: skip
    _HEADINGS: ClassVar[dict[str, int]] = {f"h{level}": level for level in range(1, 7)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        # (heading path, text parts) per section; the first one is what precedes any heading.
        self.sections: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
        self._stack: list[tuple[int, str]] = []
        self._heading: list[str] | None = None
        self._heading_level = 0
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._HEADINGS and self._skip_depth == 0:
            self._heading, self._heading_level = [], self._HEADINGS[tag]
            self.parts.append("\n")
        elif tag in self._BLOCK:
            self._add("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._HEADINGS and self._heading is not None:
            heading = " ".join(" ".join(self._heading).split())
            self._heading = None
            self.parts.append("\n")
            if heading:
                while self._stack and self._stack[-1][0] >= self._heading_level:
                    self._stack.pop()
                self._stack.append((self._heading_level, heading))
                self.sections.append((tuple(h for _, h in self._stack), []))
        elif tag in self._BLOCK:
            self._add("\n")

    def _add(self, text: str) -> None:
        self.parts.append(text)
        self.sections[-1][1].append(text)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif self._skip_depth == 0:
            if self._heading is not None:
                self._heading.append(data)
                self.parts.append(data)
            else:
                self._add(data)


def _tidy(text: str) -> str:
    lines = (re.sub(r"[ \t\f\v\xa0]+", " ", line).strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html(data: bytes, filename: str) -> tuple[str, str, tuple[Section, ...]]:
    parser = _HTMLText()
    parser.feed(_decode(data, filename))
    parser.close()
    sections = tuple(Section(path, _tidy("".join(parts))) for path, parts in parser.sections)
    return _tidy("".join(parser.parts)), _tidy(" ".join(parser.title_parts)), sections


def _pdf(data: bytes, filename: str) -> tuple[str, str, tuple[Section, ...]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise UnreadableDocumentError(f"{filename} is not a PDF (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocumentError(f"{filename} is an encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title) if info is not None and info.title else ""
    except UnreadableDocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise UnreadableDocumentError(f"{filename} is a corrupt PDF: {error}") from error
    if not pages:
        raise UnreadableDocumentError(f"{filename} is a PDF with no pages")
    text = _tidy("\n\n".join(pages))
    if not text:
        raise UnreadableDocumentError(
            f"{filename} is a PDF with no extractable text (a scan? text extraction needs "
            "a text layer)"
        )
    sections = tuple(
        Section((f"Page {number}",), _tidy(page)) for number, page in enumerate(pages, start=1)
    )
    return text, title, sections


def _atx_heading(line: str) -> tuple[int, str] | None:
    """(level, text) when `line` is an ATX heading (`## Text ##`); plain string work, linear."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3 or not stripped.startswith("#"):
        return None
    level = len(stripped) - len(stripped.lstrip("#"))
    rest = stripped[level:]
    if level > 6 or (rest and rest[0] not in " \t"):
        return None
    text = rest.strip(" \t")
    closed = text.rstrip("#")
    if closed != text and (not closed or closed[-1] in " \t"):
        text = closed.strip(" \t")
    return level, text


def _setext_level(line: str) -> int:
    """1 for a `===` underline, 2 for `---`, else 0."""
    stripped = line.strip()
    if len(stripped) >= 2 and stripped == "=" * len(stripped):
        return 1
    if len(stripped) >= 3 and stripped == "-" * len(stripped):
        return 2
    return 0


def markdown_sections(text: str) -> tuple[str, tuple[Section, ...]]:
    """The title (first level 1-2 heading) and the sections of a markdown text.

    Headings inside fenced code blocks are text; a `---` under a one-line paragraph is a
    level-2 heading (setext), elsewhere a rule.
    """
    sections: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
    stack: list[tuple[int, str]] = []
    title = ""
    fence = ""
    lines = text.splitlines()

    def open_section(level: int, heading: str) -> None:
        nonlocal title
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        sections.append((tuple(h for _, h in stack), []))
        if not title and level <= 2:
            title = heading

    for index, line in enumerate(lines):
        body = sections[-1][1]
        marker = line.lstrip()[:3]
        if fence:
            if marker == fence:
                fence = ""
            body.append(line)
            continue
        if marker in ("```", "~~~"):
            fence = marker
            body.append(line)
            continue
        atx = _atx_heading(line)
        if atx is not None and atx[1]:
            open_section(*atx)
            continue
        level = _setext_level(line)
        previous = lines[index - 1].strip() if index > 0 else ""
        before = lines[index - 2].strip() if index > 1 else ""
        if level and previous and not before and body and body[-1].strip() == previous:
            body.pop()
            open_section(level, previous)
            continue
        body.append(line)
    return title, tuple(Section(path, _tidy("\n".join(body))) for path, body in sections)


def extract(data: bytes, *, filename: str, content_type: str | None = None) -> Extracted:
    """Extract the text and title of a file (CPU-bound: call it off the event loop).

    Args:
        data: The file's bytes.
        filename: Its name, which decides its type (and is the fallback title).
        content_type: The declared media type, used when the name has no extension.

    Returns:
        The text, title and doc_type.

    Raises:
        UnsupportedTypeError: The type is not .txt, .md, .html or .pdf.
        UnreadableDocumentError: The file is empty, corrupt, or holds no text.
    """
    doc_type = doc_type_for(filename, content_type)
    if not data.strip():
        raise UnreadableDocumentError(f"{filename} is empty")
    title = ""
    if doc_type == "pdf":
        text, title, sections = _pdf(data, filename)
    elif doc_type == "html":
        text, title, sections = _html(data, filename)
    else:
        text = _tidy(_decode(data, filename))
        sections = (Section((), text),)
        if doc_type == "md":
            title, sections = markdown_sections(text)
    if not text:
        raise UnreadableDocumentError(f"{filename} has no text to index")
    return Extracted(
        text=text,
        title=title or PurePath(filename).stem,
        doc_type=doc_type,
        sections=tuple(s for s in sections if s.text or s.path),
    )
