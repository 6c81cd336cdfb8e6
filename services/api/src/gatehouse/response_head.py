"""A response's head as uvicorn writes it, in one compiled pass (``server_protocol``).

uvicorn's httptools protocol checks each header field with two regular expressions,
lower-cases its name and compares it three times, all in Python: about 0.7 us a field
(`timeit`), and an answer of Gatehouse's carries 14. Most of that is the expressions:
``re`` tests a character class byte by byte, some 25 ns a byte. Here the same work is
compiled (``make compiled``), and each expression, one character class, becomes a byte
table (``bytes.translate``, a lookup a byte). A field name is checked and lower-cased
once per process (an answer's names are a few constants). The values are checked once
a head, over the whole head: with its names checked, the refused bytes in it are its
line ends (two a line) unless a value holds one, so counting them is the check.

Only heads uvicorn writes without error and without framing decisions of its own
beyond Content-Length are made here: no Transfer-Encoding or Connection field. For any
other, ``response_head`` returns None (or raises, on a field that is not bytes or a
Content-Length that is not a number) and uvicorn's own code writes the head, with its
own errors; tests/unit/test_response_head.py holds the two against each other.
"""

from __future__ import annotations

from typing import Final

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

# The bytes each of uvicorn's expressions matches, read from the expressions themselves.
NAME_REFUSED: Final = bytes(byte for byte in range(256) if HEADER_RE.fullmatch(bytes([byte])))
VALUE_REFUSED: Final = bytes(
    byte for byte in range(256) if HEADER_VALUE_RE.fullmatch(bytes([byte]))
)
# The same, as a translation: a refused byte to NUL (itself refused), any other to itself.
# Counting NULs after it is the cheaper check over a whole head (no deletion).
TO_NUL: Final = bytes(0 if byte in VALUE_REFUSED else byte for byte in range(256))
# Every byte a value may not hold, a name may not either: a head of checked names holds
# value-refused bytes only in its line ends and in values.
if not set(VALUE_REFUSED) <= set(NAME_REFUSED):
    raise RuntimeError("uvicorn's header expressions changed: response_head needs a look")

# Names already checked, each with its lower-cased form. An answer's field names come from
# a few dozen constants, so each is checked once per process; the bound keeps an app that
# invents names per response from growing it (those are checked every time). The names
# that decide framing are never kept: Content-Length is kept as the one object below, so
# a kept name is compared by identity, and Transfer-Encoding and Connection go to uvicorn.
# (Final: compiled, a module's Final names are read without a lookup in its dictionary.)
_checked_names: Final[dict[bytes, bytes]] = {}
CHECKED_NAMES_MAX: Final = 256
# uvicorn's status lines, each with its count of bytes a value may not hold (its CR LF).
REFUSED_IN_STATUS_LINE: Final = {
    line: line.translate(TO_NUL).count(0) for line in STATUS_LINE.values()
}
CONTENT_LENGTH: Final = b"content-length"


def response_head(
    status_line: bytes, fields: list[tuple[bytes, bytes]], keep_alive: bool, may_chunk: bool
) -> tuple[bytes, int] | None:
    """(the head's bytes, the Content-Length or -1), or None for uvicorn to write it.

    ``status_line`` is uvicorn's (``STATUS_LINE``), ``fields`` its default fields then the
    response's, ``keep_alive`` whether the connection stays open, ``may_chunk`` whether
    a body without a length would be chunked (not for HEAD, 204 or 304). A head with
    no Content-Length then ends with ``transfer-encoding: chunked``, as uvicorn's does.
    """
    content = [status_line]
    content_length = -1
    lines = 1  # the lines after the status line, the blank one ending the head included
    for raw_name, value in fields:
        name = _checked_names.get(raw_name)
        if name is None:
            name = checked_name(raw_name)
            if name is None:
                return None
        if name is CONTENT_LENGTH and content_length < 0:  # uvicorn reads the first one
            content_length = int(value.decode())
        content.append(name)
        content.append(b": ")
        content.append(value)
        content.append(b"\r\n")
        lines += 1
    if not keep_alive:
        content.append(b"connection: close\r\n")
        lines += 1
    if content_length < 0 and may_chunk:
        content.append(b"transfer-encoding: chunked\r\n")
        lines += 1
    content.append(b"\r\n")
    head = b"".join(content)
    # The values, all checked at once: with the names checked, the head holds refused
    # bytes where its lines end (CR LF) and in the status line, or a value holds one.
    in_status_line = REFUSED_IN_STATUS_LINE.get(status_line)
    if in_status_line is None:  # not one of uvicorn's
        in_status_line = status_line.translate(TO_NUL).count(0)
    if head.translate(TO_NUL).count(0) != in_status_line + 2 * lines:
        return None  # uvicorn raises, naming the first bad value
    return head, content_length


def checked_name(raw_name: bytes) -> bytes | None:
    """``raw_name`` lower-cased, or None when uvicorn refuses it or it is a field whose
    framing uvicorn's code decides (Transfer-Encoding, Connection)."""
    if holds_any(raw_name, NAME_REFUSED):
        return None  # uvicorn raises, naming the first bad field
    name = raw_name.lower()
    if name == CONTENT_LENGTH:
        name = CONTENT_LENGTH
    elif name == b"transfer-encoding" or name == b"connection":
        return None
    if len(_checked_names) < CHECKED_NAMES_MAX:
        _checked_names[raw_name] = name
    return name


def holds_any(data: bytes, refused: bytes) -> bool:
    """Whether ``data`` holds any of the bytes ``refused``: deleting them shortens it."""
    return len(data.translate(None, refused)) != len(data)
