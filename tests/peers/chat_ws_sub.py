"""A WebSocket subscriber of the chat server's room, with Python `websockets` (Debian's
python3-websockets), for scripts/test-chat-redis.sh.

    /usr/bin/python3 chat_ws_sub.py URL ROOM SECONDS

Connects to URL's /ws?room=ROOM, prints each text frame it gets as one line (the JSON
object as received) and flushes it, for SECONDS at most. A close prints `closed CODE`;
then it connects again with since=<the last id it saw>, as the chat page does, and prints
`reconnected`. Exits 0 when the time is up.
"""
import asyncio
import json
import sys
import time

import websockets


async def main(url, room, seconds):
    end = time.monotonic() + seconds
    base = url.replace("http://", "ws://", 1).rstrip("/")
    last = 0
    first = True
    while time.monotonic() < end:
        target = f"{base}/ws?room={room}" + (f"&since={last}" if last else "")
        try:
            async with websockets.connect(target, open_timeout=5, max_size=None) as ws:
                print("connected" if first else "reconnected", flush=True)
                first = False
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        frame = await asyncio.wait_for(ws.recv(), timeout=left)
                    except asyncio.TimeoutError:
                        return
                    print(frame, flush=True)
                    try:
                        last = max(last, int(json.loads(frame)["id"]))
                    except (ValueError, KeyError, TypeError):
                        pass
        except websockets.ConnectionClosed as e:
            print(f"closed {e.code}", flush=True)
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as e:
            print(f"connect failed: {e}", flush=True)
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
