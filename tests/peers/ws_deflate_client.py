"""Python `websockets` (Debian's python3-websockets) with permessage-deflate against a
squall server route that takes it.

    /usr/bin/python3 ws_deflate_client.py PORT PATH TAKEOVER

TAKEOVER 1: websockets' defaults (context takeover, windows of 12 bits asked); 0: both
sides asked to compress each message on its own. Checks that the server agreed to the
extension, then echoes text and binary, small and 1 MiB, whole and fragmented, and closes
with 1000. Run by tests/test_ws_deflate.c. Prints "ok" and exits 0, or says what differed
and exits 1.
"""
import asyncio
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


def fail(msg):
    print("ws_deflate_client.py: " + msg, flush=True)
    sys.exit(1)


def pattern(i, n, binary):
    # compressible, but not a single repeated byte
    if binary:
        return bytes(((k // 7) * 13 + i) & 0xFF for k in range(n))
    return "".join("squall-" [k % 7] if k % 50 else chr(0x61 + (k // 50 + i) % 26)
                   for k in range(n))


async def main(port, path, takeover):
    if takeover:
        ext = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]
    else:
        ext = [ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                              client_no_context_takeover=True,
                                              client_max_window_bits=True)]
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None,
                                  extensions=ext, compression=None) as ws:
        agreed = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        if not agreed.startswith("permessage-deflate"):
            fail(f"no permessage-deflate in the answer: {agreed!r}")
        if not takeover and "server_no_context_takeover" not in agreed:
            fail(f"server_no_context_takeover not agreed: {agreed!r}")
        i = 0
        for binary in (False, True):
            for n in (0, 1, 100, 127, 128, 5000, 1 << 20):
                msg = pattern(i, n, binary)
                i += 1
                await ws.send(msg)
                got = await ws.recv()
                if got != msg:
                    fail(f"whole {'binary' if binary else 'text'} of {n}: {len(got)} back")
            for n in (300, 1 << 20):
                msg = pattern(i, n, binary)
                i += 1
                step = max(1, n // 4)
                await ws.send(msg[k:k + step] for k in range(0, n, step))
                got = await ws.recv()
                if got != msg:
                    fail(f"fragmented {'binary' if binary else 'text'} of {n}: {len(got)} back")
        await ws.close(code=1000, reason="python done")
    print("ok", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"), 25))
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        fail(f"{type(e).__name__}: {e}")
