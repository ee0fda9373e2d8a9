"""Python `websockets` (Debian's python3-websockets) against a squall server.

    /usr/bin/python3 ws_client.py PORT MODE

MODE echo:       /echo: text and binary of every size, whole and fragmented (an iterable
                 is sent as fragments), a clean close from this side (1000); then /closer:
                 "close, please" makes the server close with 4001 "server bye".
MODE hello-echo: hello's /ws/echo: the same echoes and the close from this side.

Run by tests/test_ws_peers.c. Prints "ok" and exits 0 when everything matched; otherwise
says what differed and exits 1.
"""
import asyncio
import sys

import websockets

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]


def fail(msg):
    print("ws_client.py: " + msg, flush=True)
    sys.exit(1)


def pattern(i, n, binary):
    if binary:
        return bytes((k * 7 + i) & 0xFF for k in range(n))
    return "".join(chr(0x61 + (k + i) % 26) for k in range(n))


def same(what, got, want):
    if type(got) is not type(want):
        fail(f"{what}: got {type(got).__name__}, expected {type(want).__name__}")
    if got != want:
        fail(f"{what}: {len(got)} back, {len(want)} sent, or different content")


async def echoes(ws):
    i = 0
    for binary in (False, True):
        for n in SIZES:
            msg = pattern(i, n, binary)
            i += 1
            await ws.send(msg)
            same(f"whole {'binary' if binary else 'text'} of {n}", await ws.recv(), msg)
    for binary in (False, True):
        for n in (3, 126, 65536, 1 << 20):
            msg = pattern(i, n, binary)
            i += 1
            step = max(1, n // 5)
            await ws.send(msg[k:k + step] for k in range(0, n, step))
            same(f"fragmented {'binary' if binary else 'text'} of {n}", await ws.recv(), msg)
    text = ["h\u00e9llo ", "\u20acuro ", "\U0001F600", "!"]
    await ws.send(iter(text))
    same("fragmented multi-byte text", await ws.recv(), "".join(text))


async def main(port, mode):
    path = "/echo" if mode == "echo" else "/ws/echo"
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None,
                                  compression=None) as ws:
        await echoes(ws)
        await ws.close(code=1000, reason="python done")
        if ws.close_code != 1000 or ws.close_reason != "python done":
            fail(f"close from the client: got {ws.close_code} \"{ws.close_reason}\"")
    if mode == "echo":
        async with websockets.connect(f"ws://127.0.0.1:{port}/closer") as ws:
            await ws.send("close, please")
            try:
                got = await ws.recv()
                fail(f"a message instead of the close: {got!r}")
            except websockets.exceptions.ConnectionClosed:
                pass  # 4001 is not "OK" to websockets (only 1000 and 1001 are): check it
            if ws.close_code != 4001 or ws.close_reason != "server bye":
                fail(f"close from the server: got {ws.close_code} \"{ws.close_reason}\"")
    print("ok", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), 25))
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        fail(f"{type(e).__name__}: {e}")
