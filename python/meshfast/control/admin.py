"""The admin API's routes (Envoy's paths where one exists).

=====================  ======================================================================
``GET /``              the live dashboard (``dashboard.html``: polls the JSON routes below)
``GET /help``          a plain-text index of these routes
``GET /ready``         200 ``ready``; 503 ``starting`` or ``draining`` (also ``stopped``)
``GET /stats``         the core's counters as JSON, and ``reloads``: config loads by outcome
``GET /stats/prometheus``  the same in Prometheus text format 0.0.4
``GET /clusters``      clusters, endpoints and their live state as JSON
``GET /config_dump``   ``{"version", "snapshot", "sources"}``: the IR the core serves
``POST /config``       a whole new config as YAML (``Content-Type: application/yaml``, or
                       another of :data:`CONFIG_TYPES`): 200 ``{"version": N, "changed": B}``
                       once the core serves it (``changed`` false: it compiled to the config
                       served already, nothing was swapped or reset, the version stays); 400
                       with one problem per line and the old config kept
``GET /logging``       ``{"loggers": {name: level}}``: meshfast's Python loggers
``POST /logging``      ``?level=LEVEL`` (all of them) or ``?LOGGER=LEVEL``: 200 with the new
                       levels, 400 naming an unknown logger or level
``POST /quitquitquit`` 200, then drain and exit
=====================  ======================================================================

Every ``GET`` route also answers ``HEAD``. Unknown paths get 404, known paths with another
method 405 with an ``Allow`` header. Calls into the core that may take time run in a
worker thread (``trio.to_thread``), so a slow stats dump never stalls the admin loop.

No browser is trusted (:func:`refusal`, checked before any route runs, and
:func:`unsupported_body`, once the route is known):

- DNS rebinding: the ``Host`` header must name this admin API: ``localhost``, ``127.0.0.1``,
  ``[::1]``, the IP address it is bound to (told with ``--admin``), or the IP address the
  connection arrived on (an admin bound to ``0.0.0.0`` answers on its pod IP), with any
  port or none (port-forwards keep working). Any other name is refused with 403, even one
  that resolves to this host: users behind a DNS name use the IP. No ``Host`` (HTTP/1.0;
  h11 refuses HTTP/1.1 without one) or a malformed one is 400.
- CSRF: a request that is not ``GET``/``HEAD`` is refused with 403 when it carries an
  ``Origin`` other than the admin's own, ``http://`` + its ``Host`` (browsers send
  ``Origin`` on every such request; ``curl`` and scripts send none). ``POST /config``
  takes only :data:`CONFIG_TYPES` (415 otherwise, also when there is none), and no other
  state-changing route takes the types a browser may send cross-site without a preflight,
  :data:`SIMPLE_TYPES` (415).
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from meshfast.control import logs
from meshfast.control.http import Request, Response, parse_address

if TYPE_CHECKING:
    from meshfast.control.sidecar import Sidecar

__all__ = [
    "CONFIG_TYPES",
    "LOOPBACK_HOSTS",
    "SIMPLE_TYPES",
    "AdminApi",
    "refusal",
    "unsupported_body",
]

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
CONFIG_SOURCE = "<POST /config>"

# The Host names (lower case, IPv6 without brackets) every admin API answers to.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# The media types of a POST /config body (parameters such as "; charset=utf-8" allowed).
CONFIG_TYPES = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/json"}
)
# What a browser sends cross-site without a CORS preflight (the Fetch standard's
# CORS-safelisted Content-Types): no state-changing route takes them.
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
SAFE_METHODS = frozenset({"GET", "HEAD"})

Route = Callable[[Request], Awaitable[Response]]


class AdminApi:
    """The request handler of a :class:`~meshfast.control.sidecar.Sidecar`'s admin server."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self._hosts: frozenset[str] | None = None
        # The routes that take a body, and its media types.
        self.body_types: dict[str, frozenset[str]] = {"/config": CONFIG_TYPES}
        self.routes: dict[str, dict[str, Route]] = {
            "/": {"GET": self.dashboard},
            "/help": {"GET": self.index},
            "/ready": {"GET": self.ready},
            "/stats": {"GET": self.stats},
            "/stats/prometheus": {"GET": self.stats_prometheus},
            "/clusters": {"GET": self.clusters},
            "/config_dump": {"GET": self.config_dump},
            "/config": {"POST": self.post_config},
            "/quitquitquit": {"POST": self.quitquitquit},
            "/logging": {"GET": self.logging, "POST": self.set_logging},
        }

    @property
    def hosts(self) -> frozenset[str]:
        """The ``Host`` names this admin API answers to (besides the connection's own IP)."""
        if self._hosts is not None:
            return self._hosts
        hosts = set(LOOPBACK_HOSTS)
        bound = self.sidecar.admin_address
        for address in (self.sidecar.settings.admin, bound):
            if address is None:
                continue
            try:
                ip = ipaddress.ip_address(parse_address(address)[0])
            except ValueError:
                continue  # a name (``localhost:15000``): only ``localhost`` is ever accepted
            if not ip.is_unspecified:
                hosts.add(_normal_ip(ip))
        result = frozenset(hosts)
        if bound is not None:
            self._hosts = result  # final once bound
        return result

    async def __call__(self, request: Request) -> Response:
        refused = refusal(request, self.hosts)
        if refused is not None:
            return refused
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
        refused = unsupported_body(request, self.body_types.get(request.path))
        if refused is not None:
            return refused
        return await route(request)

    # === routes ===

    async def dashboard(self, request: Request) -> Response:
        """The live dashboard: a static page that polls the JSON routes below."""
        from importlib.resources import files

        page = files("meshfast.control").joinpath("dashboard.html").read_bytes()
        return Response(200, page, content_type="text/html; charset=utf-8")

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
        stats = json.loads(body)
        stats["reloads"] = self.sidecar.reloader.counts()
        failures = self._filter_failures()
        if failures:
            stats["filters"] = failures
        return Response(200, json.dumps(stats).encode(), content_type="application/json")

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
        before = self.sidecar.version
        try:
            version = await self.sidecar.apply_yaml(text, source=CONFIG_SOURCE)
        except ConfigError as exc:
            return Response.text(400, "".join(f"{problem}\n" for problem in exc.problems))
        except self.sidecar.core_errors as exc:
            name = type(exc).__name__
            return Response.text(
                400, f"{CONFIG_SOURCE}: the core rejected the snapshot ({name}): {exc}\n"
            )
        # changed: false when it compiled to what is served already (nothing was swapped).
        return Response.json(200, {"version": version, "changed": version != before})

    async def logging(self, request: Request) -> Response:
        return Response.json(200, {"loggers": logs.levels()})

    async def set_logging(self, request: Request) -> Response:
        """``POST /logging?level=debug`` (every logger) or ``?meshfast.filters=debug``."""
        changes = urllib.parse.parse_qsl(request.query, keep_blank_values=True)
        if not changes:
            return Response.text(400, "give ?level=LEVEL or ?LOGGER=LEVEL\n")
        try:
            for name, level in changes:
                logs.set_level(name, level)
        except ValueError as exc:
            return Response.text(400, f"{exc}\n")
        return Response.json(200, {"loggers": logs.levels()})

    async def quitquitquit(self, request: Request) -> Response:
        return Response(200, b"draining\n", after_sent=self.sidecar.request_shutdown)


# === the rules for browsers ===


def refusal(request: Request, hosts: frozenset[str]) -> Response | None:
    """The answer refusing ``request`` for its ``Host`` or ``Origin`` (see the module
    docstring), or None.

    ``hosts``: the accepted ``Host`` names (normalized as :func:`split_authority` does);
    the IP address the connection arrived on (``request.local``) is accepted too.
    """
    host_header = request.header("host")
    if host_header is None:
        return Response.text(400, "missing Host header\n")
    authority = split_authority(host_header)
    if authority is None:
        return Response.text(400, f"malformed Host header: {host_header!r}\n")
    host = authority[0]
    if host not in hosts and host != _local(request.local):
        return Response.text(
            403,
            f"Host {host_header!r} is not this admin API's address: use localhost, 127.0.0.1,"
            " [::1] or the IP address the admin listens on (DNS names are refused: DNS"
            " rebinding)\n",
        )
    if request.method in SAFE_METHODS:
        return None
    origin = request.header("origin")
    if origin is not None and _origin_authority(origin) != authority:
        return Response.text(
            403,
            f"Origin {origin!r} is not this admin API's own origin (http://{host_header}):"
            f" a {request.method} from another origin is refused (CSRF)\n",
        )
    return None


def unsupported_body(request: Request, wanted: frozenset[str] | None) -> Response | None:
    """415 for a state-changing ``request`` whose ``Content-Type`` is not one of ``wanted``
    (None: the route takes no body, so no type a browser may send cross-site), or None."""
    if request.method in SAFE_METHODS:
        return None
    media = media_type(request.header("content-type"))
    if wanted is not None and media not in wanted:
        return Response.text(
            415,
            f"{request.method} {request.path} takes Content-Type "
            f"{', '.join(sorted(wanted))}; not {media or 'none'}\n",
        )
    if wanted is None and media in SIMPLE_TYPES:
        return Response.text(
            415,
            f"{request.method} {request.path} takes no {media} body (a type any web page"
            " can send cross-site)\n",
        )
    return None


def split_authority(value: str) -> tuple[str, int] | None:
    """``host[:port]`` or ``[ipv6][:port]`` → ``(host, port)``: the host in lower case, an
    IP address in its normal form (IPv6 without brackets), the port 80 when absent.
    None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        try:
            ip = ipaddress.IPv6Address(value[1:end])
        except ValueError:
            return None
        host, rest = _normal_ip(ip), value[end + 1 :]
    else:
        host, sep, tail = value.partition(":")
        rest = sep + tail
        if not host:
            return None
    if not rest:
        return host, 80
    digits = rest[1:]
    if rest[0] != ":" or not (digits.isascii() and digits.isdigit()) or len(digits) > 5:
        return None
    port = int(digits)
    return (host, port) if port <= 65535 else None


def media_type(content_type: str | None) -> str:
    """``"Application/YAML; charset=utf-8"`` → ``"application/yaml"`` (``""`` for None)."""
    if content_type is None:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _origin_authority(origin: str) -> tuple[str, int] | None:
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or scheme.lower() != "http" or "/" in rest or "@" in rest:
        return None  # "null", https://…: never this plain-HTTP admin API
    return split_authority(rest)


def _normal_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _local(address: str) -> str | None:
    """The connection's local IP address as :func:`split_authority` writes it."""
    try:
        return _normal_ip(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return None
