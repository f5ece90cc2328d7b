"""The workers' accept handler (``serving.service.fair_accept``) on a real asyncio server and sockets.

Balancing itself needs two worker processes and is measured in the benchmark notes; here: every
connection is still served, through the immediate and the deferred path, and a server closed
while a deferred accept waits shuts down cleanly.
"""

from __future__ import annotations

import asyncio

import pytest

from serving.service import ACCEPT_DELAY_CAP, fair_accept


class FairLoop(asyncio.SelectorEventLoop):
    _accept_connection = fair_accept(asyncio.SelectorEventLoop._accept_connection)


def run_on_fair_loop(coroutine_function):
    loop = FairLoop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        return loop.run_until_complete(asyncio.wait_for(coroutine_function(), 10)), errors
    finally:
        loop.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.readline():
        writer.write(data)
        await writer.drain()
    writer.close()


async def talk(port: int, text: str) -> tuple[str, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode() + b"\n")
    await writer.drain()
    return (await reader.readline()).decode().strip(), writer


def test_every_connection_is_served_while_earlier_ones_stay_open():
    async def scenario():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        held = [await talk(port, f"one by one {i}") for i in range(3)]  # the 2nd and 3rd wait their turn
        together = await asyncio.gather(*(talk(port, f"together {i}") for i in range(6)))
        active = server._active_count
        for _, writer in held + list(together):
            writer.close()
        server.close()
        await server.wait_closed()
        return [answer for answer, _ in held + list(together)], active

    (answers, active), errors = run_on_fair_loop(scenario)
    assert answers == [f"one by one {i}" for i in range(3)] + [f"together {i}" for i in range(6)]
    assert active == 9
    assert errors == []


def test_server_closed_while_an_accept_is_deferred_shuts_down_cleanly():
    async def scenario():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, first = await talk(port, "held")  # the server now holds a connection: the next accept waits
        _, late = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0)  # the deferred accept is scheduled
        server.close()
        await asyncio.sleep(ACCEPT_DELAY_CAP * 3)  # it fires after the close and must do nothing
        first.close()
        late.close()
        await server.wait_closed()

    _, errors = run_on_fair_loop(scenario)
    assert errors == []


def test_fair_accept_refuses_a_handler_of_another_shape_and_wraps_once():
    def other(self, sock):
        return None

    with pytest.raises(TypeError, match="unexpected accept handler"):
        fair_accept(other)
    wrapped = FairLoop._accept_connection
    assert fair_accept(wrapped) is wrapped


def test_outside_a_bentoml_worker_the_process_is_left_alone():
    import asyncio.selector_events
    import sys

    from serving.service import configure_worker_process

    before = asyncio.selector_events.BaseSelectorEventLoop._accept_connection
    interval = sys.getswitchinterval()
    configure_worker_process()
    assert asyncio.selector_events.BaseSelectorEventLoop._accept_connection is before
    assert not getattr(before, "fair", False)
    assert sys.getswitchinterval() == interval
