"""The response header fields that describe a route's limit, by IETF draft revision.

draft-ietf-httpapi-ratelimit-headers (https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/)
has changed its wire format between revisions, so the serializer is chosen by revision
(``APP_RATE_LIMIT_HEADERS_DRAFT``):

- ``07`` (June 2023): ``RateLimit-Policy`` is a List of Integer quotas with a ``w``
  (window) parameter; ``RateLimit`` is a Dictionary ``limit=, remaining=, reset=``
  reporting the expiring limit. No policy names; two policies MUST NOT share a quota.
- ``08`` to ``11`` (October 2024 to May 2026): both fields are Lists of named items.
  The name MUST be a String (RFC 9651 sf-string). ``RateLimit-Policy`` items carry
  ``q`` (quota, required), ``w`` (window seconds, non-zero), and optionally ``qu``
  (quota unit, a String, default "requests") and ``pk`` (partition key, a Byte
  Sequence); ``RateLimit`` items carry ``r`` (required) and optionally ``t`` and ``pk``.
  The bytes are the same in all four; what ``t`` means moved: seconds until the quota
  resets (08, 09), until more quota is made available (10), the "effective window"
  within which no more than ``r`` may be used (11). For a fixed window all three are
  the seconds until the window ends, which is what is sent.

Gatehouse sends neither ``qu`` (its unit is the default, requests) nor ``pk`` (the
partition is the client, whose key must not leak). ``X-RateLimit-Limit``,
``-Remaining`` and ``-Reset`` are the same in every revision.

Everything constant is serialized once per route policy (``LimitFields``); a request
only splices its remaining count and reset seconds into prebuilt bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

# Revisions whose wire format this module writes; the default is the newest one read.
DRAFTS = ("07", "08", "09", "10", "11")
DEFAULT_DRAFT = "11"

# RFC 9651 section 3.3.1: an Integer has at most 15 decimal digits.
MAX_INTEGER = 999_999_999_999_999

# b"0" to b"4095": the remaining count and the seconds to reset are small on almost
# every response, and indexing here costs a quarter of formatting (b"%d" % n).
_DECIMALS = tuple(b"%d" % n for n in range(4096))

_KEY_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz*")
_KEY_REST = _KEY_FIRST | frozenset("0123456789_-.")


def sf_integer(value: int) -> bytes:
    """An RFC 9651 Integer; ValueError past its 15 digits."""
    if not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise ValueError(f"{value} does not fit a structured-field integer (15 digits)")
    return b"%d" % value


def sf_string(text: str) -> bytes:
    """An RFC 9651 String. It holds only printable ASCII (0x20-0x7E), with ``"`` and ``\\``
    escaped; any other character, and ``%`` itself, is written as %XX of its UTF-8 bytes,
    so any name gives a valid field and two different names stay different."""
    out = ['"']
    for char in text:
        if char == "%" or not " " <= char <= "~":
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(char)
    out.append('"')
    return "".join(out).encode("ascii")


def sf_key(key: str) -> bytes:
    """A parameter or dictionary key (RFC 9651 section 3.1.2); ValueError if invalid."""
    if not key or key[0] not in _KEY_FIRST or any(char not in _KEY_REST for char in key):
        raise ValueError(f"{key!r} is not a structured-field key")
    return key.encode("ascii")


def sf_parameters(parameters: Sequence[tuple[str, int]]) -> bytes:
    """``;key=integer`` for each parameter, in order."""
    return b"".join(b";" + sf_key(key) + b"=" + sf_integer(value) for key, value in parameters)


def policy_items(name: str, windows: Sequence[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """(item name, quota, window seconds) for a route's (quota, seconds) windows: the
    route's own name for one window, else suffixed by the window (``search-1s``,
    ``search-60s``), numbered when two windows have the same length."""
    if len(windows) == 1:
        return [(name, windows[0][0], windows[0][1])]
    items: list[tuple[str, int, int]] = []
    taken: set[str] = set()
    for quota, seconds in windows:
        candidate = base = f"{name}-{seconds}s"
        number = 2
        while candidate in taken:
            candidate = f"{base}-{number}"
            number += 1
        taken.add(candidate)
        items.append((candidate, quota, seconds))
    return items


class LimitFields:
    """The header fields of one route policy, serialized for one draft revision.

    ``items`` are (policy name, quota, window seconds), one per window. Built once per
    policy: invalid input (an unknown draft, a window of 0 s, a number past 15 digits,
    two items of one name) raises ValueError here, at start-up, never a broken header.
    """

    def __init__(self, items: Sequence[tuple[str, int, int]], draft: str = DEFAULT_DRAFT):
        if draft not in DRAFTS:
            raise ValueError(f"unknown draft {draft!r} (supported: {', '.join(DRAFTS)})")
        if not items:
            raise ValueError("a policy needs at least one window")
        for name, quota, seconds in items:
            if quota < 0 or seconds <= 0:
                raise ValueError(
                    f"{name!r}: a quota >= 0 and a window > 0 s, not {quota}/{seconds}"
                )
            sf_integer(quota)
            sf_integer(seconds)
        names = [sf_string(name) for name, _, _ in items]
        if len(set(names)) != len(names):
            raise ValueError("two windows of one policy have the same name")
        self.draft = draft
        self.limits: tuple[tuple[bytes, bytes], ...] = tuple(
            (b"x-ratelimit-limit", b"%d" % quota) for _, quota, _ in items
        )
        if draft == "07":
            # One item per distinct quota (the draft forbids two policies with the
            # same quota): the longest window of each, in the windows' order.
            longest: dict[int, int] = {}
            for _, quota, seconds in items:
                longest[quota] = max(seconds, longest.get(quota, 0))
            policy = b", ".join(
                sf_integer(quota) + sf_parameters([("w", seconds)])
                for quota, seconds in longest.items()
            )
            heads = [b"limit=" + sf_integer(quota) + b", remaining=" for _, quota, _ in items]
            reset_key = b", reset="
        else:
            policy = b", ".join(
                name + sf_parameters([("q", quota), ("w", seconds)])
                for name, (_, quota, seconds) in zip(names, items, strict=True)
            )
            heads = [name + b";r=" for name in names]
            reset_key = b";t="
        self.policy: tuple[bytes, bytes] = (b"ratelimit-policy", policy)
        # Per window, the RateLimit value up to its remaining count, then what separates
        # that count from the reset seconds.
        self.remaining_heads: tuple[bytes, ...] = tuple(heads)
        self.reset_key: bytes = reset_key

    def fields(self, index: int, remaining: int, reset_seconds: int) -> list[tuple[bytes, bytes]]:
        """X-RateLimit-Limit/-Remaining/-Reset, RateLimit-Policy and RateLimit for window
        ``index``. Negative numbers are sent as 0, numbers past 15 digits as the largest."""
        if remaining < 0:
            remaining = 0
        elif remaining > MAX_INTEGER:
            remaining = MAX_INTEGER
        if reset_seconds < 0:
            reset_seconds = 0
        elif reset_seconds > MAX_INTEGER:
            reset_seconds = MAX_INTEGER
        remaining_text = _DECIMALS[remaining] if remaining < 4096 else b"%d" % remaining
        reset_text = _DECIMALS[reset_seconds] if reset_seconds < 4096 else b"%d" % reset_seconds
        return [
            self.limits[index],
            (b"x-ratelimit-remaining", remaining_text),
            (b"x-ratelimit-reset", reset_text),
            self.policy,
            (
                b"ratelimit",
                b"".join((self.remaining_heads[index], remaining_text, self.reset_key, reset_text)),
            ),
        ]
