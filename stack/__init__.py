"""The chart's rendered output for an environment, run on this machine without Kubernetes.

``python -m stack up`` (``make stack``) for people; ``Stack`` for the tests in
tests/stack. See ``stack.harness`` for the address plan and ``stack.loopback`` for every
way a local process differs from its pod. ``runtime="container"`` (``make stack
STACK_RUNTIME=container``) runs the API pods as containers of the built image instead,
restricted as the rendered pod is (``stack.containers``).
"""

from __future__ import annotations

from .harness import ENVIRONMENTS, EnvironmentSpec, Pod, Stack

__all__ = ["ENVIRONMENTS", "EnvironmentSpec", "Pod", "Stack"]
