"""The shared rate limiter: routes declare limits with slowapi, the edge enforces them.

- ``declarations``: the slowapi ``Limiter`` routes declare with, its wrapper left out.
- ``policy``: rate strings and slowapi declarations turned into per-route policies.
- ``keys``: who is counted (client IP, IPv6 by /64, or a hash of the credential).
- ``storage``: the counters: one Redis script call per check, or process memory.
- ``failover``: what happens when Redis fails (mode ``open`` or ``closed``).
- ``middleware``: the ASGI layer that checks, answers 429 and writes the headers.
"""
