"""A Python `websockets` echo server (asyncio, compression off, no keep-alive pings).

usage: python3 bench/peers/ws_echo_py.py PORT
"""
import asyncio
import sys

import websockets


async def echo(ws, path=None):
    # A client that leaves without a close frame is normal here (the load generator
    # drops its connections at the end): no traceback for it.
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main(port):
    async with websockets.serve(echo, "127.0.0.1", port, compression=None,
                                ping_interval=None, max_size=1 << 20, backlog=1024):
        print(f"listening {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8004))
