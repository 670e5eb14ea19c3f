"""The multipart body of POST /documents, read as it streams in.

Starlette's form parser makes a part without a filename a text field (decoded, capped at 1 MB,
its Content-Type lost), yet RFC 7578 makes the filename optional, and schemathesis and some
generated clients send file parts without one. Here the `file` part is the file whether or
not it names itself, its bytes kept as sent, and no more than the upload limit of it is ever
held: the request is refused (413) the moment the part grows past the limit.

Errors keep FastAPI's validation shape (`detail[].loc`): a missing `file` is
`["body", "file"]`, a body that is not a well-formed multipart/form-data one is `["body"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from stores.extract import DocumentTooLargeError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# The text fields of the form, and how many bytes of each are kept: enough for the longest
# valid value (2,000 characters of up to 4 bytes), so a longer one is still seen as too long.
TEXT_FIELDS = ("collection", "source")
TEXT_FIELD_BYTES = 4 * 2000 + 4
FILE_FIELD = "file"


@dataclass(slots=True)
class UploadedFile:
    """The `file` part: its bytes, and the filename and Content-Type it came with (if any)."""

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(slots=True)
class UploadForm:
    """What a POST /documents body holds: the file, and the text fields as sent."""

    file: UploadedFile
    fields: dict[str, str] = field(default_factory=dict)


def form_error(loc: tuple[str, ...], message: str, kind: str = "value_error") -> Exception:
    """A 422 in FastAPI's validation shape, naming `loc`."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": message, "input": None}])


def _bad_body(message: str) -> Exception:
    return form_error(("body",), message)


class _Reader:
    """The parser's callbacks: one part at a time, the file part's bytes bounded by `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ended = False
        self.file: UploadedFile | None = None
        self.fields: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._name: str | None = None
        self._filename: str | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._keep = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self._headers = {}
        self._name = self._filename = None
        self._chunks = []
        self._size = 0
        self._keep = 0

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        name = bytes(self._header_name).decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._header_value).decode("latin-1").strip()
        self._header_name.clear()
        self._header_value.clear()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _bad_body("a part of the multipart body has no form-data name")
        self._name = options[b"name"].decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", errors="replace") if filename else None
        if self._filename is not None and "\x00" in self._filename:
            raise form_error(("body", FILE_FIELD), "the filename holds a NUL character")
        if self._name == FILE_FIELD:
            if self.file is not None:
                raise form_error(("body", FILE_FIELD), "one file per upload")
            self._keep = self.limit
        elif self._name in TEXT_FIELDS:
            self._keep = TEXT_FIELD_BYTES
        # Any other part is read past and dropped (the body as a whole is bounded upstream).

    def part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._name == FILE_FIELD and self._size + size > self.limit:
            raise DocumentTooLargeError(
                f"{self._filename or 'the file'} is over the limit of {self.limit} bytes"
            )
        room = self._keep - self._size
        if room > 0:
            self._chunks.append(data[start : start + min(size, room)])
        self._size += size

    def part_end(self) -> None:
        data = b"".join(self._chunks)
        self._chunks = []
        if self._name == FILE_FIELD:
            self.file = UploadedFile(data, self._filename, self._headers.get("content-type"))
        elif self._name in TEXT_FIELDS:
            self.fields[self._name] = data.decode("utf-8", errors="replace")

    def end(self) -> None:
        self.ended = True


async def read_upload_form(request: Request, limit: int) -> UploadForm:
    """The `file` part (at most `limit` bytes) and text fields of a multipart/form-data body.

    Raises:
        RequestValidationError: Not multipart/form-data, malformed, or no `file` part (422).
        DocumentTooLargeError: The file part is over `limit` bytes (413), raised as soon as it
            is, without reading the rest of the body.
    """
    media, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if media == b"multipart/form-data" and not boundary:
        raise _bad_body("the multipart/form-data body has no boundary")
    if media != b"multipart/form-data" or not boundary:
        raise form_error(
            ("body", FILE_FIELD),
            "a multipart/form-data body with a `file` part is required",
            kind="missing",
        )
    reader = _Reader(limit)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise _bad_body("the multipart body is malformed") from None
    if not reader.ended:
        raise _bad_body("the multipart body ends before its closing boundary")
    if reader.file is None:
        raise form_error(("body", FILE_FIELD), "Field required", kind="missing")
    return UploadForm(reader.file, reader.fields)
