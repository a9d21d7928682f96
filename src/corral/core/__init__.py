"""The isolation runtime: pure asyncio, no ASGI, SQL or Redis."""
