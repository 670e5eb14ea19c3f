"""Plain text (and a title) out of uploaded .txt, .md, .html and .pdf files."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

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
    """The text of a document, its title and its doc_type."""

    text: str
    title: str
    doc_type: str


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


def _decode(data: bytes, filename: str) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableDocumentError(f"{filename} is binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML page and its <title>."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
         "footer", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr", "dd", "dt"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif self._skip_depth == 0:
            self.parts.append(data)


def _tidy(text: str) -> str:
    lines = (re.sub(r"[ \t\f\v\xa0]+", " ", line).strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html(data: bytes, filename: str) -> tuple[str, str]:
    parser = _HTMLText()
    parser.feed(_decode(data, filename))
    parser.close()
    return _tidy("".join(parser.parts)), _tidy(" ".join(parser.title_parts))


def _pdf(data: bytes, filename: str) -> tuple[str, str]:
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
    return text, title


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        match = re.match(r"^#{1,2}\s+(.+?)\s*#*\s*$", line)
        if match:
            return match.group(1)
    return ""


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
        text, title = _pdf(data, filename)
    elif doc_type == "html":
        text, title = _html(data, filename)
    else:
        text = _tidy(_decode(data, filename))
        if doc_type == "md":
            title = _markdown_title(text)
    if not text:
        raise UnreadableDocumentError(f"{filename} has no text to index")
    return Extracted(text=text, title=title or PurePath(filename).stem, doc_type=doc_type)
