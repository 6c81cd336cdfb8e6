"""The check: one Lua script counts every window of a limit; its outcome, a Verdict.

The script's reply is parsed here too (``parse_reply``), so the reply's shape is
written down once, next to the script that builds it. The memory store gives the
same Verdict for the same windows (``memory``); ``redis_store`` runs the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

# Each script checks every window of a route's limit in one call, all or nothing, on
# Redis's own clock (TIME), so replicas with skewed clocks share one view of time.
# KEYS: one per window. ARGV: cost, then per window (amount, window in ms), for sliding
# (kind, amount, window in ms). Returns {allowed (1/0), retry_ms, count_1, reset_ms_1, ...}:
# - retry_ms: when refused, the milliseconds until this request would be admitted (if no
#   other hit comes first): Retry-After, exact for each algorithm; 0 when admitted;
# - count: the units the window holds (what the headers subtract from the amount);
# - reset_ms: the milliseconds until the window holds nothing again.
# A key's expiry only frees memory: every decision reads its times from the value,
# except fixed windows, whose key lives exactly as long as its window.

# The one clock of every script. Tests swap this function for one reading the last ARGV
# (``with_argv_clock``), so the same Lua runs on a clock they step.
CLOCK = """local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
ARGV_CLOCK = """local function now_ms()
  return tonumber(ARGV[#ARGV])
end
"""
# Lua 5.1 has doubles only: floor(a / b) can round up for large a. Every value here is an
# integer below 2^53, so the product checks below make the quotient exact.
IDIV = """local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then return q - 1 end
  if (q + 1) * b <= a then return q + 1 end
  return q
end
local function ceil_div(a, b) return -idiv(-a, b) end
"""

FIXED_SCRIPT = (
    CLOCK
    + """
local cost = tonumber(ARGV[1])
if #KEYS == 1 then
  -- One window (the common case): count first, undo a refusal. Two commands instead
  -- of four, and the same answer: a refused request leaves the count as it was.
  local count = redis.call('INCRBY', KEYS[1], cost)
  local reset_ms
  if count == cost then
    local window_ms = tonumber(ARGV[3])
    reset_ms = window_ms - (now_ms() % window_ms)
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
    return {0, reset_ms, count - cost, reset_ms}
  end
  return {1, 0, count, reset_ms}
end
local now = now_ms()
local counts = {}
local allowed = 1
local retry = 0
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] + cost > tonumber(ARGV[2 * i]) then allowed = 0 end
end
local reply = {allowed, 0}
for i = 1, #KEYS do
  local window_ms = tonumber(ARGV[2 * i + 1])
  local reset_ms = -1
  if allowed == 1 then
    counts[i] = redis.call('INCRBY', KEYS[i], cost)
    if counts[i] == cost then
      reset_ms = window_ms - (now % window_ms)
      redis.call('PEXPIRE', KEYS[i], reset_ms)
    end
  end
  if reset_ms < 0 then
    reset_ms = redis.call('PTTL', KEYS[i])
    if reset_ms < 0 then reset_ms = window_ms - (now % window_ms) end
  end
  if allowed == 0 and counts[i] + cost > tonumber(ARGV[2 * i]) and reset_ms > retry then
    retry = reset_ms
  end
  reply[2 * i + 1] = counts[i]
  reply[2 * i + 2] = reset_ms
end
reply[2] = retry
return reply
"""
)

# The exact trailing window: a list of the hits' times (ms), newest first, holding only
# those inside the window, so its length is the count. A request costing c is admitted
# when count + c <= amount; refused, it waits until the hit at index amount - c (counted
# from the newest) leaves the window. The two-counter kind weighs the previous fixed
# window's count by how much of it the trailing window still covers (an estimate), in
# one hash per client and window: field = window number, value = its count.
SLIDING_SCRIPT = (
    CLOCK
    + IDIV
    + """
local now = now_ms()
local cost = tonumber(ARGV[1])
local kinds, amounts, spans, counts, currents, indexes = {}, {}, {}, {}, {}, {}
local allowed, retry = 1, 0
for i = 1, #KEYS do
  local kind, amount, span = tonumber(ARGV[3*i - 1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i + 1])
  kinds[i], amounts[i], spans[i] = kind, amount, span
  local key, count, wait = KEYS[i], 0, 0
  if kind == 0 then
    while true do
      local oldest = redis.call('LINDEX', key, -1)
      if not oldest or tonumber(oldest) > now - span then break end
      redis.call('RPOP', key)
    end
    count = redis.call('LLEN', key)
    if cost > amount then
      wait = span  -- never admitted
    elseif count + cost > amount then
      wait = tonumber(redis.call('LINDEX', key, amount - cost)) + span - now
    end
  else
    local index = idiv(now, span)
    local elapsed = now - index * span
    local current = tonumber(redis.call('HGET', key, index) or '0')
    local previous = tonumber(redis.call('HGET', key, index - 1) or '0')
    count = idiv(previous * (span - elapsed), span) + current
    currents[i], indexes[i] = current, index
    if cost > amount then
      wait = span  -- never admitted
    elseif count + cost > amount then
      -- The estimate falls as the previous window slides out: the first millisecond
      -- e of a window where floor(p * (span - e) / span) <= room.
      local room, start, p = amount - cost - current, index * span, previous
      if room < 0 then room, start, p = amount - cost, start + span, current end
      local e = 0
      if p > 0 then e = math.max(0, span - idiv((room + 1) * span - 1, p)) end
      wait = start + e - now
    end
  end
  counts[i] = count
  if count + cost > amount then
    allowed = 0
    if wait > retry then retry = wait end
  end
end
local reply = {allowed, 0}
if allowed == 0 then reply[2] = math.max(retry, 1) end
for i = 1, #KEYS do
  local key, span, count, reset_ms = KEYS[i], spans[i], counts[i], 0
  if kinds[i] == 0 then
    if allowed == 1 then
      local stamps = {}
      for j = 1, cost do stamps[j] = now end
      redis.call('LPUSH', key, unpack(stamps))
      redis.call('PEXPIRE', key, span)
      count = count + cost
    end
    if count > 0 then reset_ms = tonumber(redis.call('LINDEX', key, 0)) + span - now end
  else
    local index, current = indexes[i], currents[i]
    if allowed == 1 then
      redis.call('HINCRBY', key, index, cost)
      redis.call('HDEL', key, index - 2)
      redis.call('PEXPIRE', key, 2 * span)
      count, current = count + cost, current + cost
    end
    if current > 0 then reset_ms = (index + 2) * span - now
    elseif count > 0 then reset_ms = (index + 1) * span - now end
  end
  reply[2 * i + 1] = count
  reply[2 * i + 2] = reset_ms
end
return reply
"""
)

# GCRA in its leaky-bucket form, in integers: a window "amount per span" is a bucket of
# amount * span that drains by amount per millisecond; a unit fills it by span. The value
# is "level last_ms". The same decisions as GCRA's theoretical arrival time, without
# storing a time scaled by the amount (which would outgrow a double's exact integers).
GCRA_SCRIPT = (
    CLOCK
    + IDIV
    + """
local now = now_ms()
local cost = tonumber(ARGV[1])
local levels = {}
local allowed, retry = 1, 0
for i = 1, #KEYS do
  local amount, span = tonumber(ARGV[2*i]), tonumber(ARGV[2*i + 1])
  local level, last = 0, now
  local state = redis.call('GET', KEYS[i])
  if state then
    local l, t = string.match(state, '^(%d+) (%d+)$')
    if l then level, last = tonumber(l), tonumber(t) end
  end
  if now > last then level = math.max(0, level - (now - last) * amount) end
  levels[i] = level
  local over = level + cost * span - amount * span
  if over > 0 then
    allowed = 0
    local wait = ceil_div(over, amount)
    if cost > amount then wait = span end  -- never admitted
    if wait > retry then retry = wait end
  end
end
local reply = {allowed, retry}
for i = 1, #KEYS do
  local amount, span, level = tonumber(ARGV[2*i]), tonumber(ARGV[2*i + 1]), levels[i]
  if allowed == 1 then
    level = level + cost * span
    redis.call('SET', KEYS[i], string.format('%d %d', level, now),
               'PX', ceil_div(level, amount) + 1)
  end
  reply[2 * i + 1] = ceil_div(level, span)
  reply[2 * i + 2] = ceil_div(level, amount)
end
return reply
"""
)

CHECK_SCRIPTS: dict[str, str] = {
    "fixed": FIXED_SCRIPT,
    "sliding": SLIDING_SCRIPT,
    "gcra": GCRA_SCRIPT,
}


def with_argv_clock(source: str) -> str:
    """``source`` reading the time from its last ARGV instead of TIME: for tests only,
    which step the clock and check the scripts against the memory store."""
    if source.count(CLOCK) != 1:
        raise ValueError("the script has no clock to replace")
    return source.replace(CLOCK, ARGV_CLOCK)


class Verdict(NamedTuple):
    """The outcome of one check: allowed or not, per window (count, ms to reset), and
    when refused, the ms until the request would be admitted."""

    allowed: bool
    counts: tuple[int, ...]
    resets_ms: tuple[int, ...]
    retry_ms: int = 0


def verdict(
    allowed: bool, counts: tuple[int, ...], resets_ms: tuple[int, ...], retry_ms: int
) -> Verdict:
    """``Verdict(...)`` without the Python-level ``__new__`` a NamedTuple generates.

    That constructor measured 5,200 instructions a call, more than the rest of a
    memory-store check; the tuple built directly is the same object.
    """
    return tuple.__new__(Verdict, (allowed, counts, resets_ms, retry_ms))


def parse_reply(reply: Sequence[Any]) -> Verdict:
    """A script's reply, ``{allowed, retry_ms, count_1, reset_ms_1, ...}``, as a Verdict."""
    if len(reply) == 4:  # one window
        return verdict(reply[0] == 1, (reply[2],), (reply[3],), reply[1])
    return verdict(reply[0] == 1, tuple(reply[2::2]), tuple(reply[3::2]), reply[1])
