"""The lab's HTTP wire: status and delay paths, answered over a real loopback socket."""

from __future__ import annotations

import asyncio
import time

from podflow.lab.httpwire import HttpSpec, answer_request, build_request, parse_status


def _exchange(path: str) -> tuple[int | None, float]:
    """Serve one request on 127.0.0.1 and send ``GET path``: (status, seconds to answer)."""
    async def main() -> tuple[int | None, float]:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await answer_request(r, w, "test")
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        writer.write(build_request(HttpSpec(path=path), f"127.0.0.1:{port}"))
        data = await reader.read()
        took = time.monotonic() - start
        writer.close()
        server.close()
        await server.wait_closed()
        return parse_status(data), took

    return asyncio.run(main())


def test_status_path_and_delay_path() -> None:
    assert _exchange("/status/503")[0] == 503
    status, took = _exchange("/delay/1")
    assert status == 200 and took >= 1.0, "the answer waits the delay asked for"
