"""A bare ASGI application answering GET /plaintext with "Hello, world".

scripts/bench-peers.sh runs it under uvicorn with uvloop and httptools, one process:
    python3 -m uvicorn --app-dir bench/peers uvicorn_app:app --loop uvloop --http httptools
"""

BODY = b"Hello, world"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"12")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/plaintext":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    else:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
