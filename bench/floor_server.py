#!/usr/bin/env python3
"""The floor: a bare websockets server that answers every CALL with a fixed CALLRESULT.

It does what any OCPP-J server cannot avoid (receive a frame, read its id,
send a reply) and nothing else, so the benchmark can measure the mock
server's cost against the websocket library's own.

    python bench/floor_server.py --port 60010
"""

import argparse
import asyncio
import json
import signal

try:
    from websockets.asyncio.server import serve
except ImportError:  # websockets < 13
    from websockets.legacy.server import serve  # type: ignore


async def answer(websocket) -> None:
    async for message in websocket:
        frame = json.loads(message)
        if frame[0] == 2:
            await websocket.send(json.dumps([3, frame[1], {}]))


async def main(host: str, port: int, subprotocol: str) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signal_number, stop.cancel)
    # Same websocket settings as the mock server: no permessage-deflate.
    async with serve(answer, host, port, subprotocols=[subprotocol], compression=None):
        print(f"listening on ws://{host}:{port}", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subprotocol", default="ocpp1.6", help="ocpp1.6 or ocpp2.0.1")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.host, arguments.port, arguments.subprotocol))
