"""A WebSocket echo app for the end-to-end tests, with the websockets package.

On each connection it first sends one JSON text message, {"server": NAME, "path":
PATH, "client_id": the trellis-client-id request header or null}, then echoes every
message, text or binary, as it comes.

Usage: ws_server.py PORT NAME. Prints "listening" once it is.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve


async def main():
    port, name = int(sys.argv[1]), sys.argv[2]

    async def echo(websocket):
        request = websocket.request
        greeting = {
            "server": name,
            "path": request.path,
            "client_id": request.headers.get("trellis-client-id"),
        }
        await websocket.send(json.dumps(greeting))
        async for message in websocket:
            await websocket.send(message)

    async with serve(echo, "0.0.0.0", port, max_size=None) as server:
        print(f"{name} listening on port {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
