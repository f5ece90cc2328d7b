"""The workers' accept handler (``serving.service.fair_accept``) on a real asyncio server and sockets.

Balancing itself needs two worker processes and is measured in the benchmark notes; here: every
connection is still served, through the immediate and the deferred path, and a server closed
while a deferred accept waits shuts down cleanly. Then the switch (``DEALRISK_FAIR_ACCEPT``) and
the start-up line saying whether the handler is active and why not; that the shipped server
keeps it active is checked on a real ``dealrisk serve`` in ``test_startup.py`` (slow tier).
"""

from __future__ import annotations

import asyncio
import logging
from asyncio.selector_events import BaseSelectorEventLoop

import pytest

from serving.config import ConfigError, ServingConfig
from serving.service import ACCEPT_DELAY_CAP, fair_accept, install_fair_accept, log_fair_accept


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


@pytest.fixture
def selector_loop():
    loop = asyncio.SelectorEventLoop()
    yield loop
    loop.close()


@pytest.fixture
def accept_restored(monkeypatch):
    """asyncio's accept handler as it was, put back after the test (``install_fair_accept`` patches the class)."""
    original = BaseSelectorEventLoop._accept_connection
    monkeypatch.setattr(BaseSelectorEventLoop, "_accept_connection", original)
    return original


def start_up_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if "fair_accept" in record.getMessage()]


def test_setting_off_leaves_asyncio_alone_and_logs_why(accept_restored, selector_loop, caplog):
    config = ServingConfig.from_env({"DEALRISK_FAIR_ACCEPT": "off"})
    install_fair_accept(config.fair_accept)
    with caplog.at_level(logging.INFO, logger="dealrisk.serving"):
        active = log_fair_accept(config.fair_accept, 1, selector_loop)
    assert BaseSelectorEventLoop._accept_connection is accept_restored
    assert not getattr(type(selector_loop)._accept_connection, "fair", False)
    assert active is False
    [line] = start_up_lines(caplog)
    assert line.startswith("dealrisk: worker 1: fair_accept inactive (DEALRISK_FAIR_ACCEPT=off)")


def test_setting_on_by_default_patches_selector_loops_once_and_logs_active(accept_restored, selector_loop, caplog):
    config = ServingConfig.from_env({})
    install_fair_accept(config.fair_accept)
    install_fair_accept(config.fair_accept)  # a second install must not wrap the wrapper
    handler = BaseSelectorEventLoop._accept_connection
    assert handler.fair and handler.__wrapped__ is accept_restored
    with caplog.at_level(logging.INFO, logger="dealrisk.serving"):
        active = log_fair_accept(config.fair_accept, 2, selector_loop)
    assert active is True
    [line] = start_up_lines(caplog)
    assert line.startswith("dealrisk: worker 2: fair_accept active")


class NotASelectorLoop(asyncio.AbstractEventLoop):
    """An event loop of another implementation (as uvloop's ``Loop`` is): no selector accept handler."""


class ChangedAcceptLoop(asyncio.SelectorEventLoop):
    """A selector loop whose private accept handler has another shape (a future asyncio)."""

    def _accept_connection(self, sock, server=None):
        return None


def test_an_installed_patch_that_another_loop_bypasses_is_logged_as_a_warning_naming_it(accept_restored, caplog):
    install_fair_accept(True)
    changed = ChangedAcceptLoop()
    try:
        with caplog.at_level(logging.INFO, logger="dealrisk.serving"):
            assert log_fair_accept(True, 1, NotASelectorLoop()) is False
            assert log_fair_accept(True, 2, changed) is False
            assert log_fair_accept(True, 3, None) is False
    finally:
        changed.close()
    other, changed_line, no_loop = start_up_lines(caplog)
    other_name = f"{NotASelectorLoop.__module__}.NotASelectorLoop"
    assert f"fair_accept inactive (the event loop is {other_name}, not asyncio's selector loop" in other
    assert "fair_accept inactive (asyncio's private accept API changed: unexpected accept handler" in changed_line
    assert "fair_accept inactive (no event loop running" in no_loop
    assert {record.levelno for record in caplog.records} == {logging.WARNING}


@pytest.mark.parametrize("raw, expected", [("on", True), ("OFF", False), ("true", True), ("0", False), ("", True)])
def test_the_setting_reads_on_and_off(raw, expected):
    assert ServingConfig.from_env({"DEALRISK_FAIR_ACCEPT": raw}).fair_accept is expected


def test_a_bad_setting_is_refused_naming_it():
    with pytest.raises(ConfigError, match="DEALRISK_FAIR_ACCEPT must be on or off, got 'sometimes'"):
        ServingConfig.from_env({"DEALRISK_FAIR_ACCEPT": "sometimes"})
