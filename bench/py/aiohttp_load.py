# The lecture's aiohttp client: 500 tasks on one ClientSession.
#   /usr/bin/python3 bench/py/aiohttp_load.py [URL] [N]
import asyncio
import sys
import time
from typing import Dict

import aiohttp

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500


async def load_one(session: aiohttp.ClientSession) -> Dict[str, str]:
    async with session.get(URL) as result:
        return await result.json()


async def load_many() -> None:
    tasks = []
    async with aiohttp.ClientSession() as session:
        for i in range(N):
            tasks.append(asyncio.create_task(load_one(session)))

        for task in tasks:
            res = await task
            print(res)


start = time.monotonic()
asyncio.run(load_many())
duration = time.monotonic() - start
print(f"spend {duration} seconds", file=sys.stderr)
