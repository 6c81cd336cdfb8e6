"""One pure ASGI middleware per edge concern; ``gatehouse.edge`` composes them."""
