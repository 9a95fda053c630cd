"""Fixtures of the embedding API's tests: in-process echo upstreams on free ports."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from meshfast import _core

Echo = Callable[[str], _core.EchoServer]


@pytest.fixture
def echo() -> Iterator[Echo]:
    """A factory: echo("a") starts an echo upstream named "a" on a free port."""
    started: list[_core.EchoServer] = []

    def start(name: str) -> _core.EchoServer:
        server = _core.EchoServer("127.0.0.1:0", name=name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


os.environ.setdefault("NO_PROXY", "*")
