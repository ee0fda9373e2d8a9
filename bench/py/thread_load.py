# The lecture's thread pool: requests.Session().get on a ThreadPoolExecutor(100).
#   /usr/bin/python3 bench/py/thread_load.py [URL] [N]
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500


def load_many() -> None:
    session = requests.Session()
    tasks = []
    with ThreadPoolExecutor(max_workers=100) as pool:
        for i in range(N):
            tasks.append(pool.submit(session.get, URL))

        for task in tasks:
            print(task.result().json())


start = time.monotonic()
load_many()
duration = time.monotonic() - start
print(f"spend {duration} seconds", file=sys.stderr)
