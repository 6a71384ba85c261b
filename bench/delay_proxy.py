"""A TCP proxy on 127.0.0.1 that delays everything it forwards, as a distant server would.

    python bench/delay_proxy.py --to PORT --delay-ms 15

Prints the port it listens on, then forwards each connection to ``127.0.0.1:PORT``, every
chunk in either direction ``--delay-ms`` later than it arrived (a round trip costs twice that).
The delay is the same for every chunk, so the order is kept and the throughput is not limited:
only latency is added, as a network path of that length adds it. Benchmarks start it as a
process of its own and stop it when done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path


def start(port: int, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    """This proxy in front of ``127.0.0.1:port`` as a process of its own, and its port. The
    caller kills it when done."""
    proxy = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--to", str(port), "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    return proxy, int(proxy.stdout.readline())


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(1 << 18)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        writer.close()


async def serve(target: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            forward(reader, up_writer, delay),
            forward(up_reader, writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=int, required=True, help="the port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, required=True, help="one way")
    args = parser.parse_args()
    asyncio.run(serve(args.to, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
