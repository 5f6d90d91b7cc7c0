"""A WebSocket client for the end-to-end tests (see ws_server.py), with websockets.

Usage: ws_client.py URL MESSAGE...

Opens URL, reads the server's greeting, sends each MESSAGE as text and waits for its
echo, sends 1 MiB of binary and waits for it back, pings, and closes with code 1000.
Prints one JSON object with what it saw.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

# Longer than any story waits: a deadline of the mesh, not of this client.
DEADLINE = 30
BLOB = bytes(range(256)) * 4096


async def talk(url, messages):
    async with connect(url, proxy=None, max_size=None, open_timeout=DEADLINE) as ws:
        greeting = json.loads(await ws.recv())
        echoes = []
        for message in messages:
            await ws.send(message)
            echoes.append(await ws.recv())
        await ws.send(BLOB)
        blob = await ws.recv()
        pong = await ws.ping()
        await pong
        await ws.close(code=1000, reason="done")
        return {
            "status": ws.response.status_code,
            "upgrade": ws.response.headers.get("Upgrade"),
            "greeting": greeting,
            "echoes": echoes,
            "binary_sent": len(BLOB),
            "binary_back": len(blob),
            "binary_intact": blob == BLOB,
            "pong": True,
            "close_code": ws.close_code,
        }


async def main():
    result = await asyncio.wait_for(talk(sys.argv[1], sys.argv[2:]), DEADLINE)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
