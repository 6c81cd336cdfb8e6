"""``python -m gatehouse.cors_check``: what a browser would get from a namespace's settings.

    python -m gatehouse.cors_check --values k8s/values-staging.yaml \\
        --origin https://app.staging.gatehouse.example --method PUT --header X-Custom

The settings come from one source, never mixed with this shell's environment unless it
is the source:

    --values FILE...   the chart's values (charts/gatehouse/values.yaml, or --chart's)
                       with each file merged over them as helm merges, turned into the
                       APP_* variables the chart's ConfigMap holds
    --env-file FILE    APP_* lines (KEY=value), over the values when both are given
    neither            this process's environment, as ``python -m gatehouse`` reads it

They are checked by the service's own settings model, and the service itself is built
from them (its edge, its CORS policy, its routes; rate limits in memory, Redis unused):
the preflight and the request are answered in process by the code that answers them in
the pods. Printed: whether a browser preflights, the preflight's status and CORS fields,
the request's, the refusal's reason. Exit status: 0 allowed, 1 refused, 2 unusable
settings or arguments (one line naming the variable, file or option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.types import Message, Scope

from .edge import Edge
from .middleware.cors import REFUSAL_SCOPE_KEY, CorsRefusal
from .service import build_service
from .settings import ConfigError, Settings, load_settings, settings_from
from .settings.values import TOKEN

ALLOWED, REFUSED, UNUSABLE = 0, 1, 2
DEFAULT_CHART = Path("charts/gatehouse")
# Methods and request headers a browser sends without asking first (Fetch, "CORS-safelisted").
# Content-Type is safelisted only for form and plain-text types; JSON is preflighted.
SIMPLE_METHODS = frozenset({"GET", "HEAD", "POST"})
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language"})
# A printed field value longer than this is cut (a mirrored list of headers can be long).
MAX_PRINTED = 300

# The chart's values -> the ConfigMap's variables (templates/configmap.yaml): the settings
# a values file can change. tests/chart checks this table against helm's rendering. Not
# here: the Service's own names the chart adds to APP_TRUSTED_HOSTS (the check asks with
# the first host listed), and APP_REDIS_URL (a preflight never reaches Redis).
CHART_VARIABLES: dict[tuple[str, ...], str] = {
    ("environment",): "APP_ENVIRONMENT",
    ("allowedOrigins",): "APP_ALLOWED_ORIGINS",
    ("corsDebugOrigins",): "APP_CORS_DEBUG_ORIGINS",
    ("trustedHosts",): "APP_TRUSTED_HOSTS",
    ("httpsRedirect",): "APP_HTTPS_REDIRECT",
    ("docsEnabled",): "APP_DOCS_ENABLED",
    ("referrerPolicy",): "APP_REFERRER_POLICY",
    ("corsMaxAge",): "APP_CORS_MAX_AGE",
    ("logLevel",): "APP_LOG_LEVEL",
    ("redisTimeout",): "APP_REDIS_TIMEOUT",
    ("rateLimit", "default"): "APP_RATE_LIMIT_DEFAULT",
    ("rateLimit", "search"): "APP_RATE_LIMIT_SEARCH",
    ("rateLimit", "failureMode"): "APP_RATE_LIMIT_FAILURE_MODE",
    ("rateLimit", "mode"): "APP_RATE_LIMIT_MODE",
    ("rateLimit", "shadowRoutes"): "APP_RATE_LIMIT_SHADOW_ROUTES",
    ("rateLimit", "routes"): "APP_RATE_LIMIT_ROUTES",
    ("rateLimit", "exemptCIDRs"): "APP_RATE_LIMIT_EXEMPT_CIDRS",
    ("limits", "maxBodyBytes"): "APP_MAX_BODY_BYTES",
    ("limits", "maxBodyBytesRoutes"): "APP_MAX_BODY_BYTES_ROUTES",
    ("limits", "bodyTimeoutSeconds"): "APP_BODY_TIMEOUT",
    ("limits", "maxHeaderBytes"): "APP_MAX_HEADER_BYTES",
    ("limits", "headerTimeoutSeconds"): "APP_HEADER_TIMEOUT",
    ("crossSitePolicy",): "APP_CROSS_SITE_POLICY",
}


class Unusable(Exception):
    """Settings or arguments the check cannot use; the message is one line."""


# Settings ---------------------------------------------------------------------------


def merge_values(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base`` as helm merges values: maps key by key, anything else
    replaced, ``null`` removing the key."""
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def _as_variable(value: Any) -> str:
    """A value as the ConfigMap renders it: lists joined by commas, maps as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def chart_variables(values: Mapping[str, Any]) -> dict[str, str]:
    """The APP_* variables the chart's ConfigMap holds for these (merged) values."""
    if values.get("existingConfigMap"):
        raise Unusable(
            "existingConfigMap: the settings live in that ConfigMap, not in the values;"
            " export its data to a file and give it with --env-file"
        )
    config = values.get("config")
    if not isinstance(config, Mapping):
        raise Unusable("config: the values have no config section")
    variables = {}
    for path, variable in CHART_VARIABLES.items():
        value: Any = config
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            variables[variable] = _as_variable(value)
    return variables


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # uvicorn[standard] brings PyYAML; only this command needs it

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise Unusable(f"{path}: cannot read: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Unusable(f"{path}: not YAML: {first}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise Unusable(f"{path}: not a map of values")
    return loaded


def _read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values  # python-dotenv, as pydantic-settings reads .env files

    if not path.is_file():
        raise Unusable(f"{path}: no such file (--env-file)")
    try:
        found = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise Unusable(f"{path}: not UTF-8 text (--env-file)") from None
    return {name: value for name, value in found.items() if value is not None}


def load(values: Sequence[Path], chart: Path, env_file: Path | None) -> tuple[Settings, str]:
    """The settings the arguments name, and where they came from, in words."""
    if not values and env_file is None:
        return load_settings(), "this environment's APP_* variables"
    variables: dict[str, str] = {}
    sources = []
    if values:
        defaults = chart / "values.yaml"
        if not defaults.is_file():
            raise Unusable(f"--chart: no values.yaml in {chart} (give the chart's directory)")
        merged = _read_yaml(defaults)
        for path in values:
            merged = merge_values(merged, _read_yaml(path))
        variables.update(chart_variables(merged))
        sources.append(" over ".join(str(path) for path in (*reversed(values), defaults)))
    if env_file is not None:
        variables.update(_read_env_file(env_file))
        sources.insert(0, str(env_file))
    return settings_from(variables), " over ".join(sources)


# The requests -----------------------------------------------------------------------


def needs_preflight(method: str, headers: Sequence[str]) -> bool:
    """Whether a browser asks first (a simplification of Fetch's rule: Content-Type
    counts as not safelisted, as it is for JSON)."""
    return method not in SIMPLE_METHODS or any(
        name.lower() not in SAFELISTED_HEADERS for name in headers
    )


def _scope(settings: Settings, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    """A request as uvicorn hands it over, for the first host the settings trust."""
    host = next((h for h in settings.trusted_hosts if h != "*"), "localhost")
    host = host.replace("*.", "api.", 1)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode("latin-1")), *headers],
        "client": ("127.0.0.1", 40000),
        "server": (host, 443),
        "state": {},
    }


class Answer:
    def __init__(self, status: int, fields: list[tuple[str, str]], refusal: CorsRefusal | None):
        self.status = status
        self.fields = fields
        self.refusal = refusal

    def field(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)


def ask(edge: Edge, scope: Scope) -> Answer:
    """The edge's answer to one request without a body."""
    started: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    asyncio.run(edge(scope, receive, send))
    fields = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in started[0]["headers"]
        if name.startswith(b"access-control-") or name in (b"vary", b"gatehouse-cors-debug")
    ]
    return Answer(started[0]["status"], fields, scope.get(REFUSAL_SCOPE_KEY))


def allows(answer: Answer, origin: str) -> bool:
    return answer.field("access-control-allow-origin") in (origin, "*")


def _printed(value: str) -> str:
    if len(value) <= MAX_PRINTED:
        return value
    return f"{value[:MAX_PRINTED]}... ({len(value)} characters)"


def _report(title: str, answer: Answer) -> list[str]:
    lines = [title, f"  status: {answer.status}"]
    lines += [f"  {name}: {_printed(value)}" for name, value in answer.fields]
    if answer.refusal is not None:
        what = answer.refusal.field.removeprefix("cors_refused_").replace("_", " ")
        lines.append(f"  refused: {answer.refusal.reason} ({what} {answer.refusal.value})")
    return lines


# The command ------------------------------------------------------------------------


def _checked_arguments(origin: str, method: str, headers: Sequence[str]) -> list[str]:
    """The request's own text, as a browser could send it; header names lower-cased."""
    if not origin or not origin.isascii() or not origin.isprintable():
        raise Unusable(f"--origin: {origin[:80]!r} is not a header value a browser sends")
    if not TOKEN.fullmatch(method):
        raise Unusable(f"--method: {method[:80]!r} is not an HTTP method")
    for name in headers:
        if not TOKEN.fullmatch(name):
            raise Unusable(f"--header: {name[:80]!r} is not a header name")
    return list(dict.fromkeys(name.lower() for name in headers))


def check(arguments: argparse.Namespace) -> int:
    headers = _checked_arguments(arguments.origin, arguments.method, arguments.header)
    settings, source = load(arguments.values, arguments.chart, arguments.env_file)
    # The answer depends on nothing in Redis (a preflight never reaches it): memory only.
    try:
        edge = build_service(settings.model_copy(update={"redis_url": None}))
    except ValueError as error:  # valid alone, not with this app (an unknown route template)
        raise Unusable(f"invalid configuration: {error}") from None
    origin, method, path = arguments.origin, arguments.method.upper(), arguments.path
    print(f"settings: {source} (environment {settings.environment})")
    print(f"origin: {origin}")
    lines: list[str] = []
    verdict = ALLOWED
    reason = None
    if needs_preflight(method, headers):
        asked = [
            (b"origin", origin.encode("latin-1")),
            (b"access-control-request-method", method.encode("latin-1")),
        ]
        if headers:
            asked.append((b"access-control-request-headers", ", ".join(headers).encode("latin-1")))
        preflight = ask(edge, _scope(settings, "OPTIONS", path, asked))
        lines += _report(f"preflight: OPTIONS {path} (a browser asks first)", preflight)
        if preflight.status // 100 != 2 or not allows(preflight, origin):
            verdict, reason = REFUSED, preflight.refusal
            lines.append("  the browser stops here: the request is never sent")
    else:
        lines.append(f"preflight: none (a browser sends {method} with these headers directly)")
    request = ask(edge, _scope(settings, method, path, [(b"origin", origin.encode("latin-1"))]))
    lines += _report(f"request: {method} {path}", request)
    if not allows(request, origin):
        verdict, reason = REFUSED, reason or request.refusal
    print("\n".join(lines))
    if verdict == ALLOWED:
        print("verdict: allowed (the page can read the answer)")
    else:
        why = f": {reason.reason}" if reason is not None else ""
        print(f"verdict: refused{why} (the page sees a CORS error)")
    return verdict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gatehouse.cors_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--origin", required=True, help="the page's origin (Origin header)")
    parser.add_argument("--method", default="GET", help="the request's method (default GET)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="a request header the page sets (repeat for several)",
    )
    parser.add_argument("--path", default="/items/1", help="the request's path (default /items/1)")
    parser.add_argument(
        "--values",
        action="append",
        default=[],
        type=Path,
        help="a values file of the namespace (repeat as for helm -f; later ones win)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=DEFAULT_CHART,
        help="the chart whose values.yaml the values files go over (default charts/gatehouse)",
    )
    parser.add_argument("--env-file", type=Path, help="APP_* variables, one KEY=value a line")
    arguments = parser.parse_args(argv)
    try:
        status = check(arguments)
    except (ConfigError, Unusable) as error:
        line = str(error).replace("\r", "\\r").replace("\n", "\\n")
        print(f"gatehouse.cors_check: {line}", file=sys.stderr)
        raise SystemExit(UNUSABLE) from None
    raise SystemExit(status)


if __name__ == "__main__":
    main()
