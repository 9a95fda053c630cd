"""Async phases: the dispatcher hands them to the Trio loop and answers through a completion.

The core's side is played by a worker thread (``trio.to_thread``) and a completion that
records what it is given; the end-to-end tests drive the real core."""

from __future__ import annotations

import threading

import trio
import trio.lowlevel

from meshfast.filters import HttpFilter, LogInfo, Request, Response
from meshfast.filters.dispatch import Dispatcher, FilterSettings
from meshfast.filters.loop import TrioLoop

INFO = ("GET", "/p", "", "svc:80", "http", "10.0.0.7:5555", "r1", "c1")


class Completion:
    def __init__(self) -> None:
        self.results: list[object] = []
        self.done = threading.Event()

    def set(self, result: object, /) -> bool:
        self.results.append(result)
        self.done.set()
        return True


async def run_phase(d: Dispatcher, call: str, *args: object) -> object:
    """Calls a phase from a worker thread, as the core does; runs an async answer to the end."""

    def worker() -> object:
        result = getattr(d, call)(*args)
        if isinstance(result, tuple) and result[0] == "async":
            c = Completion()
            result[1](c)
            assert c.done.wait(10), "no answer"
            (result,) = c.results
        return result

    return await trio.to_thread.run_sync(worker)


class AskAuth(HttpFilter):
    """Awaits 'I/O', then allows or denies."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    async def on_request(self, request: Request) -> Response | None:
        self.threads.append(threading.current_thread().name)
        await trio.lowlevel.checkpoint()
        if request.headers.get("authorization") != "Bearer good":
            return Response(401, {"www-authenticate": "Bearer"}, "denied\n")
        request.headers["x-user"] = "alice"
        return None

    async def on_response(self, request: Request, response: Response) -> None:
        await trio.lowlevel.checkpoint()
        response.headers["x-authorized"] = request.headers["x-user"]


class Sync(HttpFilter):
    def on_request(self, request: Request) -> Response | None:
        request.headers.add("x-sync", "1")
        return None


async def test_async_request_and_response_phases_run_on_the_trio_thread() -> None:
    f = AskAuth()
    d = Dispatcher({0: Sync(), 1: f, 2: Sync()})
    async with trio.open_nursery() as nursery:
        d.bind(TrioLoop(nursery))
        auth = [("authorization", "Bearer good")]
        result = await run_phase(d, "on_request", (0, 1, 2), INFO, auth)
        assert isinstance(result, tuple)
        assert result[0] == "continue"
        assert result[1] == [
            ("authorization", "Bearer good"),
            ("x-sync", "1"),
            ("x-user", "alice"),
            ("x-sync", "1"),
        ]
        out = await run_phase(d, "on_response", (0, 1, 2), INFO, 200, [], None, result[-1])
        assert out == ("continue", [("x-authorized", "alice")], None)
        denied = await run_phase(d, "on_request", (1,), INFO, [])
        assert isinstance(denied, tuple)
        assert denied[:2] == ("respond", 401)
    assert f.threads == [threading.main_thread().name] * 2


async def test_async_phase_over_its_budget_is_cancelled_and_counted() -> None:
    class Hangs(HttpFilter):
        async def on_request(self, request: Request) -> Response | None:
            await trio.sleep_forever()
            return None

    f = Hangs()
    f.name = "ns/hangs"
    d = Dispatcher({0: f}, {0: FilterSettings(timeout=0.05, failure_status=504)})
    async with trio.open_nursery() as nursery:
        d.bind(TrioLoop(nursery))
        result = await run_phase(d, "on_request", (0,), INFO, [])
    assert isinstance(result, tuple)
    assert result[0] == "error"
    assert result[1] == 504
    assert result[3] is True
    assert d.timeouts == {"ns/hangs": 1}


async def test_async_raise_is_an_error_answer() -> None:
    class Raises(HttpFilter):
        async def on_request(self, request: Request) -> Response | None:
            raise ConnectionError("auth service down")

    d = Dispatcher({0: Raises()})
    async with trio.open_nursery() as nursery:
        d.bind(TrioLoop(nursery))
        result = await run_phase(d, "on_request", (0,), INFO, [])
    assert isinstance(result, tuple)
    assert result[0] == "error"
    assert "auth service down" in str(result[2])
    assert sum(d.errors.values()) == 1


def test_async_phase_without_a_loop_fails_cleanly() -> None:
    d = Dispatcher({0: AskAuth()})
    result = d.on_request((0,), INFO, [])
    assert result is not None
    assert result[0] == "error"
    assert "Trio loop" in result[2]


async def test_async_on_log_runs_fire_and_forget() -> None:
    seen = trio.Event()
    got: list[str] = []

    class Log(HttpFilter):
        async def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
            await trio.lowlevel.checkpoint()
            got.append(f"{response.status} {info.flags}")
            seen.set()

    d = Dispatcher({0: Log()})
    async with trio.open_nursery() as nursery:
        d.bind(TrioLoop(nursery))
        result = await run_phase(d, "on_request", (0,), INFO, [])
        assert isinstance(result, tuple)
        await trio.to_thread.run_sync(d.on_log, (0,), INFO, 504, "UT", result[-1])
        with trio.fail_after(10):
            await seen.wait()
    assert got == ["504 UT"]


async def test_a_closed_loop_refuses_with_an_error_answer() -> None:
    d = Dispatcher({0: AskAuth()})
    async with trio.open_nursery() as nursery:
        d.bind(TrioLoop(nursery))
    # The nursery is closed: the task cannot start; the completion still gets an answer.
    result = await run_phase(d, "on_request", (0,), INFO, [])
    assert isinstance(result, tuple)
    assert result[0] == "error"
    assert "refused" in str(result[2])
