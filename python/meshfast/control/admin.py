"""The admin API's routes (Envoy's paths where one exists).

=====================  ======================================================================
``GET /``              a plain-text index of these routes
``GET /ready``         200 ``ready``; 503 ``starting`` or ``draining`` (also ``stopped``)
``GET /stats``         the core's counters as JSON
``GET /stats/prometheus``  the same in Prometheus text format 0.0.4
``GET /clusters``      clusters, endpoints and their live state as JSON
``GET /config_dump``   ``{"version", "snapshot", "sources"}``: the IR the core serves
``POST /config``       a whole new config as YAML: 200 ``{"version": N}`` once the core
                       serves it; 400 with one problem per line and the old config kept
``POST /quitquitquit`` 200, then drain and exit
=====================  ======================================================================

Every ``GET`` route also answers ``HEAD``. Unknown paths get 404, known paths with another
method 405 with an ``Allow`` header. Calls into the core that may take time run in a
worker thread (``trio.to_thread``), so a slow stats dump never stalls the admin loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from meshfast.control.http import Request, Response

if TYPE_CHECKING:
    from meshfast.control.sidecar import Sidecar

__all__ = ["AdminApi"]

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
CONFIG_SOURCE = "<POST /config>"

Route = Callable[[Request], Awaitable[Response]]


class AdminApi:
    """The request handler of a :class:`~meshfast.control.sidecar.Sidecar`'s admin server."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.routes: dict[str, dict[str, Route]] = {
            "/": {"GET": self.index},
            "/ready": {"GET": self.ready},
            "/stats": {"GET": self.stats},
            "/stats/prometheus": {"GET": self.stats_prometheus},
            "/clusters": {"GET": self.clusters},
            "/config_dump": {"GET": self.config_dump},
            "/config": {"POST": self.post_config},
            "/quitquitquit": {"POST": self.quitquitquit},
        }

    async def __call__(self, request: Request) -> Response:
        methods = self.routes.get(request.path)
        if methods is None:
            return Response.text(404, f"no such admin path: {request.path} (see GET /)\n")
        method = "GET" if request.method == "HEAD" else request.method
        route = methods.get(method)
        if route is None:
            allow = sorted(methods) + (["HEAD"] if "GET" in methods else [])
            return Response(
                405,
                f"{request.method} is not allowed on {request.path}\n".encode(),
                headers=(("allow", ", ".join(allow)),),
            )
        return await route(request)

    # === routes ===

    async def index(self, request: Request) -> Response:
        lines = ["meshfast admin", ""]
        for path, methods in self.routes.items():
            lines.extend(f"  {method:<5} {path}" for method in sorted(methods))
        return Response.text(200, "\n".join(lines) + "\n")

    async def ready(self, request: Request) -> Response:
        state = self.sidecar.state
        return Response.text(200 if state == "ready" else 503, state)

    def _filter_failures(self) -> dict[str, dict[str, int]]:
        if self.sidecar.filters is None:
            return {}  # (a sidecar without filters never imports their machinery)
        from meshfast.filters.dispatch import failure_counts

        return failure_counts(self.sidecar.filters)

    async def stats(self, request: Request) -> Response:
        body = await trio.to_thread.run_sync(self.sidecar.core.stats_json)
        failures = self._filter_failures()
        if failures:
            stats = json.loads(body)
            stats["filters"] = failures
            body = json.dumps(stats)
        return Response(200, body.encode(), content_type="application/json")

    async def stats_prometheus(self, request: Request) -> Response:
        body = await trio.to_thread.run_sync(self.sidecar.core.stats_prometheus)
        failures = self._filter_failures()
        if failures:
            lines = []
            for kind, help_text in (
                ("errors", "exceptions raised by a Python filter"),
                ("timeouts", "phases of a Python filter that overran its time budget"),
            ):
                metric = f"meshfast_filter_{kind}_total"
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                for name, n in failures.items():
                    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
                    lines.append(f'{metric}{{filter="{escaped}"}} {n[kind]}')
            body += "\n".join(lines) + "\n"
        return Response(200, body.encode(), content_type=PROMETHEUS)

    async def clusters(self, request: Request) -> Response:
        body = await trio.to_thread.run_sync(self.sidecar.core.clusters_json)
        return Response(200, body.encode(), content_type="application/json")

    async def config_dump(self, request: Request) -> Response:
        # Imported here: an idle sidecar started from the snapshot cache never loads them.
        import msgspec

        from meshfast.config import ir

        sidecar = self.sidecar
        dump = {
            "version": sidecar.version,
            "snapshot": ir.to_builtins(sidecar.snapshot),
            "sources": list(sidecar.sources),
        }
        body = msgspec.json.format(msgspec.json.encode(dump), indent=2) + b"\n"
        return Response(200, body, content_type="application/json")

    async def post_config(self, request: Request) -> Response:
        from meshfast.config import ConfigError

        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Response.text(400, f"{CONFIG_SOURCE}: the body is not UTF-8: {exc}\n")
        try:
            version = await self.sidecar.apply_yaml(text, source=CONFIG_SOURCE)
        except ConfigError as exc:
            return Response.text(400, "".join(f"{problem}\n" for problem in exc.problems))
        except self.sidecar.core_errors as exc:
            name = type(exc).__name__
            return Response.text(
                400, f"{CONFIG_SOURCE}: the core rejected the snapshot ({name}): {exc}\n"
            )
        return Response.json(200, {"version": version})

    async def quitquitquit(self, request: Request) -> Response:
        return Response(200, b"draining\n", after_sent=self.sidecar.request_shutdown)
