#!/usr/bin/env python3
"""A TCP proxy that holds every chunk for a fixed delay each way, so a
service on this machine (PostgreSQL, Redis) answers as if it were across a
network. Order is kept; nothing is dropped. Benchmarks only.

    python3 bench/delay_proxy.py --listen 127.0.0.1:15432 --to 127.0.0.1:5432 --ms 1
"""
import argparse
import asyncio


async def pipe(reader, writer, delay):
    queue = asyncio.Queue(maxsize=1024)  # bounded: a slow side slows the other

    async def forward():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(forward())
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            await queue.put((loop.time() + delay, data))
    except ConnectionError:
        pass
    await queue.put((0, None))
    await sender


async def serve(listen, to, delay):
    host, port = to.rsplit(":", 1)

    async def client(reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w, delay), pipe(up_r, writer, delay),
                             return_exceptions=True)

    lhost, lport = listen.rsplit(":", 1)
    server = await asyncio.start_server(client, lhost, int(lport))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:15432")
    p.add_argument("--to", default="127.0.0.1:5432")
    p.add_argument("--ms", type=float, default=1.0, help="delay each way, ms")
    a = p.parse_args()
    asyncio.run(serve(a.listen, a.to, a.ms / 1000))
