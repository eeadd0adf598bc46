"""HTTP client benchmark: CPU per POST of delivery's HTTP client against a keep-alive sink in
its own process, 64 calls in flight, as the sender makes them.

    .venv/bin/python tests/benchmarks/http_client.py [--calls 20000] [--aiohttp]

``--aiohttp`` sends through aiohttp's ClientSession instead (the path the client takes when a
proxy is configured), for comparison. Prints calls/s and the CPU us per call of this process
(user + system: robust on a loaded machine where calls/s is not).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery import _sink

from cjo_delivery.adapters.http_client import HttpClient
from support import free_port

BODY = {"message_id": "m-1", "channel": "sms", "to": "+14155550100",
        "sms": {"text": "Your code is 123456"}}


async def run(port: int, calls: int, aiohttp: bool) -> None:
    client = HttpClient(allow_private=True)  # the sink is on 127.0.0.1
    client._proxied = aiohttp  # the aiohttp path, as with a proxy configured
    url = f"http://127.0.0.1:{port}/send"
    slots = asyncio.Semaphore(64)

    async def one() -> None:
        async with slots:
            answer = await client.post(url, timeout=10.0, json_body=BODY,
                                       headers={"Authorization": "Bearer k-1"})
            assert answer.status_code == 200, answer
            answer.json()

    try:
        await asyncio.gather(*(one() for _ in range(500)))  # connections opened, warm
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()
    print(f"{'aiohttp' if aiohttp else 'lean'}: {calls} calls, {calls / wall:,.0f} calls/s, "
          f"CPU {cpu / calls * 1e6:.1f} us per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--aiohttp", action="store_true")
    args = parser.parse_args()
    port = free_port()
    count = multiprocessing.Value("i", 0)
    sink = multiprocessing.Process(target=_sink, args=(port, count), daemon=True)
    sink.start()
    try:
        time.sleep(0.5)
        asyncio.run(run(port, args.calls, args.aiohttp))
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
