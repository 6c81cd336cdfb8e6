"""A response's head as uvicorn writes it, in one compiled pass (``server_protocol``).

uvicorn's httptools protocol checks each header field with two regular expressions,
lower-cases its name and compares it three times, all in Python: about 0.7 us a field
(`timeit`), and an answer of Gatehouse's carries 14. Most of that is the expressions:
``re`` tests a character class byte by byte, some 25 ns a byte. Here the same work is
compiled (``make compiled``), and each check runs once, over all the names joined, then
all the values, as a deletion of the bytes its expression matches (``bytes.translate``,
a table lookup a byte): each expression is one character class, so a field fails its
check exactly when that deletion shortens it, and the joined bytes fail when one does.

Only heads uvicorn writes without error and without framing decisions of its own
beyond Content-Length are made here: no Transfer-Encoding or Connection field. For any
other, ``response_head`` returns None (or raises, on a field that is not bytes or a
Content-Length that is not a number) and uvicorn's own code writes the head, with its
own errors; tests/unit/test_response_head.py holds the two against each other.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

# The bytes each of uvicorn's expressions matches, read from the expressions themselves.
NAME_REFUSED = bytes(byte for byte in range(256) if HEADER_RE.fullmatch(bytes([byte])))
VALUE_REFUSED = bytes(byte for byte in range(256) if HEADER_VALUE_RE.fullmatch(bytes([byte])))


def response_head(
    status_line: bytes, fields: list[tuple[bytes, bytes]], keep_alive: bool, may_chunk: bool
) -> tuple[bytes, int] | None:
    """(the head's bytes, the Content-Length or -1), or None for uvicorn to write it.

    ``status_line`` is uvicorn's (``STATUS_LINE``), ``fields`` its default fields then the
    response's, ``keep_alive`` whether the connection stays open, ``may_chunk`` whether
    a body without a length would be chunked (not for HEAD, 204 or 304). A head with
    no Content-Length then ends with ``transfer-encoding: chunked``, as uvicorn's does.
    """
    names: list[bytes] = []
    values: list[bytes] = []
    content = [status_line]
    content_length = -1
    for name, value in fields:
        name = name.lower()
        if name == b"content-length":
            if content_length < 0:  # uvicorn reads the first one only
                content_length = int(value.decode())
        elif name == b"transfer-encoding" or name == b"connection":
            return None
        names.append(name)
        values.append(value)
        content.append(name)
        content.append(b": ")
        content.append(value)
        content.append(b"\r\n")
    if holds_any(b"".join(names), NAME_REFUSED) or holds_any(b"".join(values), VALUE_REFUSED):
        return None  # uvicorn raises, naming the first bad field
    if not keep_alive:
        content.append(b"connection: close\r\n")
    if content_length < 0 and may_chunk:
        content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return b"".join(content), content_length


def holds_any(data: bytes, refused: bytes) -> bool:
    """Whether ``data`` holds any of the bytes ``refused``: deleting them shortens it."""
    return len(data.translate(None, refused)) != len(data)
