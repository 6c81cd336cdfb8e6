from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.types import ASGIApp


class CORSMiddleware(StarletteCORSMiddleware):
    """Starlette's CORS middleware with an allowlist that can be replaced at run time.

    Starlette already answers preflights, mirrors an allowed origin with credentials
    and adds ``Vary: Origin`` to every response. Gatehouse adds two things: a count
    of refused origins (``on_refused``), and ``replace_origins`` so a reloaded
    ConfigMap takes effect without a restart (the swap is one attribute assignment,
    atomic for the event loop).
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Collection[str],
        allow_methods: Collection[str],
        allow_headers: Collection[str],
        expose_headers: Collection[str],
        max_age: int,
        allow_credentials: bool = True,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            app,
            allow_origins=frozenset(allow_origins),
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            allow_credentials=allow_credentials,
            expose_headers=expose_headers,
            max_age=max_age,
        )
        self.on_refused = on_refused

    def replace_origins(self, origins: Collection[str]) -> None:
        self.allow_origins = frozenset(origins)

    def is_allowed_origin(self, origin: str) -> bool:
        allowed = origin in self.allow_origins
        if not allowed and self.on_refused is not None:
            self.on_refused()
        return allowed
