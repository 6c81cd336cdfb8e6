"""The check: one Lua script counts every window of a limit; its outcome, a Verdict.

The script's reply is parsed here too (``parse_reply``), so the reply's shape is
written down once, next to the script that builds it. The memory store gives the
same Verdict for the same windows (``memory``); ``redis_store`` runs the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

# One call checks every window of a limit, all or nothing, and reports each window's
# count and time to reset, so the response headers need no second round trip.
# The windows are fixed and aligned to Redis's clock (TIME), so replicas with skewed
# clocks still share one window; a key expires when its window ends.
# KEYS: one per window. ARGV: cost, then (amount, window in ms) per window.
# Returns: {allowed (1/0), count_1, reset_ms_1, count_2, reset_ms_2, ...}
CHECK_SCRIPT = """
if #KEYS == 1 then
  -- One window (the common case): count first, undo a refusal. Two commands instead
  -- of four, and the same answer: a refused request leaves the count as it was.
  local cost = tonumber(ARGV[1])
  local count = redis.call('INCRBY', KEYS[1], cost)
  local reset_ms
  if count == cost then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local window_ms = tonumber(ARGV[3])
    reset_ms = window_ms - (now_ms % window_ms)
    redis.call('PEXPIRE', KEYS[1], reset_ms)
  else
    reset_ms = redis.call('PTTL', KEYS[1])
    if reset_ms < 0 then  -- a key that lost its expiry must not block for ever
      reset_ms = tonumber(ARGV[3])
      redis.call('PEXPIRE', KEYS[1], reset_ms)
    end
  end
  if count > tonumber(ARGV[2]) then
    redis.call('DECRBY', KEYS[1], cost)
    return {0, count - cost, reset_ms}
  end
  return {1, count, reset_ms}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local cost = tonumber(ARGV[1])
local counts = {}
local allowed = 1
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] + cost > tonumber(ARGV[2 * i]) then allowed = 0 end
end
local reply = {allowed}
for i = 1, #KEYS do
  local window_ms = tonumber(ARGV[2 * i + 1])
  local reset_ms = -1
  if allowed == 1 then
    counts[i] = redis.call('INCRBY', KEYS[i], cost)
    if counts[i] == cost then
      reset_ms = window_ms - (now_ms % window_ms)
      redis.call('PEXPIRE', KEYS[i], reset_ms)
    end
  end
  if reset_ms < 0 then
    reset_ms = redis.call('PTTL', KEYS[i])
    if reset_ms < 0 then reset_ms = window_ms - (now_ms % window_ms) end
  end
  reply[2 * i] = counts[i]
  reply[2 * i + 1] = reset_ms
end
return reply
"""


class Verdict(NamedTuple):
    """The outcome of one check: allowed or not, and per window (count, ms to reset)."""

    allowed: bool
    counts: tuple[int, ...]
    resets_ms: tuple[int, ...]


def verdict(allowed: bool, counts: tuple[int, ...], resets_ms: tuple[int, ...]) -> Verdict:
    """``Verdict(...)`` without the Python-level ``__new__`` a NamedTuple generates.

    That constructor measured 5,200 instructions a call, more than the rest of a
    memory-store check; the tuple built directly is the same object.
    """
    return tuple.__new__(Verdict, (allowed, counts, resets_ms))


def parse_reply(reply: Sequence[Any]) -> Verdict:
    """The script's reply, ``{allowed, count_1, reset_ms_1, ...}``, as a Verdict."""
    if len(reply) == 3:  # one window
        return verdict(reply[0] == 1, (reply[1],), (reply[2],))
    return verdict(reply[0] == 1, tuple(reply[1::2]), tuple(reply[2::2]))
