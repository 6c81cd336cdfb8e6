"""The shared rate limiter: routes declare limits with slowapi, the edge enforces them.

- ``declarations``: the slowapi ``Limiter`` routes declare with, its wrapper left out.
- ``policy``: rate strings and slowapi declarations turned into per-route policies.
- ``keys``: the anonymous client's key (client IP, IPv6 by /64).
- ``identity``: who is counted: a verified JWT subject, a known API key, else ``keys``.
- ``script``: the check, one Lua script for every window of a limit; its Verdict.
- ``redis_store``: the script run on the shared Redis (pipelined, or redis-py).
- ``pipeline``: the pipelined Redis connection the hot path runs it on.
- ``memory``: the same windows in process memory (no Redis, or Redis down).
- ``failover``: what happens when Redis fails (mode ``open`` or ``closed``).
- ``peers``: how many processes share the limit (``open``'s divisor), learned in Redis.
- ``headers``: the X-RateLimit-* and IETF RateLimit fields, by draft revision.
- ``limiter``: the check the edge runs per request: its headers, or a 429.
"""
