"""The ``meshfast`` command line.

Each command imports what it needs when it runs (Trio, the config loader, the Rust
core), so ``meshfast --help`` and ``meshfast validate`` stay cheap.

Exit codes: 0 success, 1 the config or the core failed, 2 usage (including features
that are not implemented yet: they are refused, never silently ignored).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, NoReturn, TextIO, cast

from meshfast import __version__

if TYPE_CHECKING:
    from meshfast import _core
    from meshfast.config import CompileOptions, Config, Problem, ir
    from meshfast.config.identity import MeshIdentity
    from meshfast.config.ir import PathNormalization
    from meshfast.control.settings import SidecarSettings
    from meshfast.control.sidecar import EncodedSnapshot
    from meshfast.deploy import Deployment, Sources
    from meshfast.tracing.tags import Local

__all__ = ["build_parser", "main"]

# DESIGN.md commands that exist in the contract but not yet in the code.
NOT_IMPLEMENTED_COMMANDS = {
    "iptables": "traffic-capture rules of a transparent sidecar",
}
# `meshfast run` flags that exist in the contract but not yet in the code: (flag, dest, metavar).
NOT_IMPLEMENTED_RUN_FLAGS: tuple[tuple[str, str, str], ...] = ()
# Istio's default `randomSamplingPercentage` (meshConfig.defaultConfig.tracing.sampling).
DEFAULT_TRACE_SAMPLING = 1.0


def _die(message: str, code: int) -> NoReturn:
    print(f"meshfast: {message}", file=sys.stderr)
    raise SystemExit(code)


# === parser ===


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _ip(text: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, not {text!r}") from None
    return text


def _locality(text: str) -> str:
    if not text.strip():
        return ""  # no locality (the default)
    parts = [p.strip() for p in text.strip().split("/")]
    if len(parts) > 3 or not parts[0] or any(not p for p in parts[1:]):
        raise argparse.ArgumentTypeError(
            f"expected REGION, REGION/ZONE or REGION/ZONE/SUBZONE, not {text!r}"
        )
    return "/".join(parts)


def _names(text: str) -> tuple[str, ...]:
    """`a,b`: a list of names (trust domain aliases)."""
    return tuple(filter(None, (i.strip() for i in text.split(","))))


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"a percentage from 0 to 100, not {text}")
    return value


def _labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2`: this workload's labels (localityLbSetting.failoverPriority)."""
    labels: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], not {text!r}")
        labels[key.strip()] = value.strip()
    return labels


def _address(text: str) -> str:
    _, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return text


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        dest="paths",
        metavar="PATH",
        action="extend",
        nargs="+",
        required=True,
        help="a YAML file (multi-document) or a folder of them; repeatable",
    )
    parser.add_argument(
        "--namespace", default="default", metavar="NS", help="the sidecar's namespace"
    )


def _proxies(text: str) -> list[str]:
    from meshfast.bench.peers import PROXIES

    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in PROXIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {','.join(PROXIES)}, not {text!r}"
        )
    return list(dict.fromkeys(names))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # No import of meshfast.bench here: building the parser must stay cheap for `run`.
    bench = commands.add_parser(
        "bench",
        help="meshfast beside Envoy, HAProxy and direct on the same scenarios",
        description="Runs every scenario for every proxy (pinned, same worker count) and"
        " writes results.json, RESULTS.md and plot.png under --out.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="brief runs (1 run of 1 s each, no warm-up)"
    )
    bench.add_argument("--out", default="bench/out", metavar="DIR")
    bench.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        metavar="NAME",
        help="repeatable; default: all (h1-keepalive, h2-multiplexed, connection-churn,"
        " large-body, route-table-1000, same-core-latency)",
    )
    bench.add_argument(
        "--proxies",
        type=_proxies,
        default=None,
        metavar="LIST",
        help="comma-separated; default: meshfast,envoy,haproxy,direct",
    )
    bench.add_argument("--workers", default=1, type=_positive_int, metavar="N")
    bench.add_argument(
        "--runs", default=None, type=_positive_int, metavar="N", help="default 3 (--quick: 1)"
    )
    bench.add_argument(
        "--duration",
        default=None,
        type=_positive_float,
        metavar="S",
        help="seconds per measured run; default 10 (--quick: 1)",
    )
    bench.add_argument("--upstream", default="echo", choices=["echo", "nginx"])
    bench.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="fail instead of installing missing tools (Envoy via pip, wrk etc. via apt-get)",
    )


def _add_export_envoy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export-envoy",
        help="the equivalent Envoy bootstrap config",
        description="Translates meshfast's compiled config into an Envoy bootstrap (static"
        " listeners, routes and clusters with the same semantics).",
    )
    _add_config(export)
    export.add_argument("--outbound", default="127.0.0.1:15001", type=_address, metavar="ADDR")
    export.add_argument(
        "--workers",
        default=1,
        type=_positive_int,
        metavar="N",
        help="Envoy's --concurrency in the header's command line",
    )
    export.add_argument("--admin-port", default=15000, type=_port, metavar="P")
    export.add_argument("-o", "--output", default=None, metavar="FILE", help="default: stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshfast",
        description="A service-mesh sidecar proxy: Istio config, a Rust data plane.",
    )
    parser.add_argument("--version", action="version", version=f"meshfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run a sidecar")
    _add_config(run)
    run.add_argument("--admin", default="127.0.0.1:15000", type=_address, metavar="ADDR")
    run.add_argument("--outbound", default="127.0.0.1:15001", type=_address, metavar="ADDR")
    run.add_argument("--inbound", default="127.0.0.1:15006", type=_address, metavar="ADDR")
    run.add_argument(
        "--app", default=None, type=_address, metavar="ADDR", help="the local workload"
    )
    run.add_argument(
        "--workers", default=0, type=_non_negative_int, metavar="N", help="0: one per CPU"
    )
    run.add_argument("--drain-timeout", default=5.0, type=_non_negative_float, metavar="SECONDS")
    run.add_argument(
        "--gateway",
        action="store_true",
        help="run as an ingress gateway: serve the Gateways' servers, no sidecar listeners",
    )
    run.add_argument(
        "--gateway-bind",
        default="0.0.0.0",
        type=_ip,
        metavar="IP",
        help="address of gateway listeners whose server has no bind (default 0.0.0.0)",
    )
    run.add_argument(
        "--path-normalization",
        default="BASE",
        type=str.upper,
        choices=("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"),
        help="Istio's meshConfig pathNormalization: how paths are normalized before they are"
        " matched and forwarded (default BASE: RFC 3986 dot segments, unreserved escapes)",
    )
    run.add_argument(
        "--original-dst-header",
        action="store_true",
        help="let x-envoy-original-dst-host name the destination of resolution NONE /"
        " PASSTHROUGH services (Envoy's use_http_header; off: only iptables' original"
        " destination counts)",
    )
    run.add_argument(
        "--request-headers-timeout",
        default=0.0,
        type=_non_negative_float,
        metavar="SECONDS",
        help="a client connection must send its first request head this soon after it is"
        " accepted (default 30)",
    )
    run.add_argument(
        "--idle-timeout",
        default=0.0,
        type=_non_negative_float,
        metavar="SECONDS",
        help="a client connection with no request in flight this long is closed (default 3600)",
    )
    run.add_argument(
        "--stream-idle-timeout",
        default=0.0,
        type=_non_negative_float,
        metavar="SECONDS",
        help="a request whose client sends no byte of its body this long ends with 408 SI"
        " (default 300)",
    )
    run.add_argument(
        "--max-connections",
        default=0,
        type=_non_negative_int,
        metavar="N",
        help="client connections open at once; past it, new ones are closed (default 65536)",
    )
    run.add_argument(
        "--locality",
        default="",
        type=_locality,
        metavar="REGION/ZONE/SUBZONE",
        help="this sidecar's locality (localityLbSetting.distribute picks its rule by it)",
    )
    run.add_argument(
        "--labels",
        default={},
        type=_labels,
        metavar="K=V,...",
        help="this workload's labels (localityLbSetting.failoverPriority compares them, "
        "AuthorizationPolicy selectors match them)",
    )
    run.add_argument(
        "--root-namespace",
        default="istio-system",
        metavar="NS",
        help="meshConfig.rootNamespace: its AuthorizationPolicies apply in every namespace",
    )
    run.add_argument(
        "--trust-domain",
        default="cluster.local",
        metavar="TD",
        help="meshConfig.trustDomain: AuthorizationPolicy principals of cluster.local mean it",
    )
    run.add_argument(
        "--trust-domain-aliases",
        default=(),
        type=_names,
        metavar="TD,...",
        help="meshConfig.trustDomainAliases: AuthorizationPolicy principals of the trust domain "
        "or any alias match all of them",
    )
    run.add_argument(
        "--certs",
        default=None,
        metavar="DIR",
        help="this workload's mesh identity: DIR/cert-chain.pem, key.pem, root-cert.pem "
        "(`meshfast ca issue`); enables ISTIO_MUTUAL and mTLS on the inbound listener; "
        "new files there are served to new handshakes",
    )
    run.add_argument(
        "--ca",
        default=None,
        metavar="DIR",
        help="the mesh CA (`meshfast ca init`) that renews the --certs certificate at half "
        "its lifetime",
    )
    run.add_argument(
        "--no-snapshot-cache",
        dest="snapshot_cache",
        action="store_false",
        help="always load and compile the config at start (default: a config that compiled "
        "before, byte for byte, starts from its cached snapshot; see README)",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload when a -c file changes (polled, debounced); a config that does not load "
        "is logged and the running one keeps serving. SIGHUP reloads too, with or without it",
    )
    run.add_argument(
        "--dns-refresh",
        default=30.0,
        type=_non_negative_float,
        metavar="SECONDS",
        help="how often DNS ServiceEntry endpoints are re-resolved (default 30; 0: never)",
    )
    run.add_argument(
        "--workload",
        default="",
        metavar="NAME",
        help="this workload's name in Istio's metrics labels (default: its app label)",
    )
    run.add_argument(
        "--access-log",
        default=None,
        metavar="PATH|-",
        help="one JSON line per request, Envoy's field names, appended to PATH (-: stdout)",
    )
    run.add_argument(
        "--access-log-fields",
        default=None,
        type=_names,
        metavar="FIELD,...",
        help="the access log's fields, in order (default: all; see README)",
    )
    run.add_argument(
        "--zipkin",
        default=None,
        metavar="URL",
        help="trace: send spans as Zipkin v2 JSON to URL (http://host:port[/api/v2/spans])",
    )
    run.add_argument(
        "--otlp",
        default=None,
        metavar="URL",
        help="trace: send spans as OTLP/HTTP protobuf to URL (http://host:port[/v1/traces])",
    )
    run.add_argument(
        "--trace-sampling",
        default=None,
        type=_percent,
        metavar="PERCENT",
        help=f"percent of requests traced when the caller did not decide "
        f"(default {DEFAULT_TRACE_SAMPLING:g}, Istio's)",
    )
    for flag, dest, metavar in NOT_IMPLEMENTED_RUN_FLAGS:
        run.add_argument(flag, dest=dest, metavar=metavar, help="(not implemented yet)")

    validate = commands.add_parser("validate", help="check a config; one line per problem")
    _add_config(validate)
    validate.add_argument(
        "--istio",
        action="store_true",
        help="Istio's validity alone: exit 0 for valid Istio that meshfast does not serve yet",
    )

    echo = commands.add_parser("echo", help="a fast built-in upstream for tests and demos")
    echo.add_argument("--listen", required=True, type=_address, metavar="ADDR")
    echo.add_argument("--name", default="echo")
    echo.add_argument("--status", default=200, type=int, metavar="CODE")
    echo.add_argument("--delay-ms", default=0, type=_non_negative_int, metavar="N")
    echo.add_argument("--workers", default=1, type=_non_negative_int, metavar="N")

    demo = commands.add_parser("demo", help="a small mesh on this machine, with traffic")
    demo.add_argument("--serve", action="store_true", help="keep everything running until Ctrl-C")
    demo.add_argument("--requests", default=2000, type=_non_negative_int, metavar="N")

    _add_explain(commands)
    _add_bench(commands)
    _add_export_envoy(commands)
    _add_ca(commands)

    for name, what in NOT_IMPLEMENTED_COMMANDS.items():
        commands.add_parser(name, help=f"{what} (not implemented yet)")
    return parser


# === commands ===


def _print_problems(problems: Sequence[Problem], file: TextIO) -> None:
    for problem in problems:
        print(problem, file=file)


def _sources(args: argparse.Namespace) -> Sources:
    from meshfast.deploy import Sources

    return Sources(tuple(args.paths), namespace=args.namespace)


def _load(args: argparse.Namespace) -> Config:
    """The config of ``-c``, its filters built, with unreadable paths turned into an exit."""
    sources = _sources(args)
    try:
        return sources.load()
    except OSError as exc:
        _die(f"cannot read {exc.filename or sources.paths}: {exc.strerror or exc}", 1)


def _deploy(args: argparse.Namespace, options: CompileOptions | None = None) -> Deployment:
    """:func:`meshfast.deploy.deploy` of ``-c``'s files (default options: the namespace's),
    with unreadable paths turned into an exit.  Raises ``ConfigError``."""
    from meshfast.config import CompileOptions
    from meshfast.deploy import deploy

    if options is None:
        options = CompileOptions(namespace=args.namespace)
    sources = _sources(args)
    try:
        return deploy(sources, options)
    except OSError as exc:
        _die(f"cannot read {exc.filename or sources.paths}: {exc.strerror or exc}", 1)


def cmd_validate(args: argparse.Namespace) -> int:
    """What ``run`` would serve, without a core: the same load (filters imported and built),
    compile and dispatcher."""
    from meshfast.config import ConfigError, load_config

    try:
        if args.istio:
            config = load_config(args.paths, namespace=args.namespace, istio=True)
        else:
            config = _deploy(args).config
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stdout)
        return 1
    except OSError as exc:
        _die(f"cannot read {exc.filename or args.paths}: {exc.strerror or exc}", 1)
    _print_problems(config.warnings, sys.stdout)
    what = "Istio resources valid" if args.istio else "resources"
    n = len(config.warnings)
    warned = f", {n} warning{'' if n == 1 else 's'}" if n else ""
    print(f"ok: {len(config.resources)} {what}{warned}")
    return 0


def _import_core() -> type[_core.Core]:
    try:
        from meshfast import _core
    except ImportError as exc:
        _die(f"the Rust core is not built ({exc}); build it with `maturin develop -r`", 1)
    return _core.Core


def _mesh_identity(folder: str | None) -> MeshIdentity | None:
    """``--certs DIR`` → the identity in it, or exit 1 naming what is wrong."""
    if folder is None:
        return None
    from meshfast.security.identity import load_identity

    try:
        return load_identity(folder)
    except (OSError, ValueError) as exc:
        _die(f"--certs {folder}: {exc}", 1)


def _renewing_ca(folder: str | None, certs: str | None) -> str | None:
    """``--ca DIR``: a CA folder, and only beside ``--certs`` (the identity it renews)."""
    if folder is None:
        return None
    if certs is None:
        _die("--ca renews the --certs identity: give --certs too", 2)
    from pathlib import Path

    if not (Path(folder) / "root-key.pem").is_file():
        _die(f"--ca {folder}: no root-key.pem (make one with `meshfast ca init`)", 1)
    return folder


def _cache_entry(args: argparse.Namespace, settings: SidecarSettings) -> str | None:
    """The snapshot cache key of this run's config and compile options."""
    from meshfast.control import snapshot_cache

    s = settings
    authz = (s.root_namespace, s.trust_domain, s.trust_domain_aliases)
    compiled_with = (s.namespace, s.outbound, s.inbound, s.app, s.locality, *authz)
    served_with = (
        s.path_normalization,
        s.original_dst_header,
        s.request_headers_timeout,
        s.idle_timeout,
        s.stream_idle_timeout,
        s.max_connections,
    )
    options = repr(
        (*compiled_with, *served_with, sorted(s.labels.items()), s.gateway, s.gateway_bind, s.certs)
    )
    identity = (s.certs.cert_chain, s.certs.root_cert) if s.certs else ()
    return snapshot_cache.key(args.paths, options, identity)


def _start_from_cache(
    core_class: type[_core.Core], args: argparse.Namespace, settings: SidecarSettings, entry: str
) -> tuple[_core.Core, ir.Snapshot | EncodedSnapshot] | None:
    """The core serving the cached snapshot of this exact config, before the config pipeline
    is imported; None on a miss (or if the core refuses the entry: then it loads normally)."""
    from meshfast.control import snapshot_cache
    from meshfast.errors import core_errors

    data = snapshot_cache.load(entry)
    if data is None:
        return None
    core = _new_core(core_class, args, settings)
    try:
        version = core.apply_snapshot(data)
    except core_errors():
        core.shutdown(0.0)
        return None
    # The Python side keeps the bytes: decoded when something asks for the snapshot
    # (/config_dump), so an idle sidecar never imports msgspec or the IR types. The entry's
    # bytes are what this same version of meshfast wrote (the key says so). A gateway's
    # ready line needs its listeners now: decode, and load normally if that fails.
    from meshfast.control.sidecar import EncodedSnapshot

    encoded = EncodedSnapshot(data, version)
    snapshot: ir.Snapshot | EncodedSnapshot = encoded
    if args.gateway:
        try:
            snapshot = encoded.decode()
        except ValueError:  # msgspec's errors: bytes the core read but Python cannot
            core.shutdown(0.0)
            return None
    where = snapshot_cache.directory()
    print(f"meshfast: serving the cached snapshot {entry[:12]} ({where})", file=sys.stderr)
    return core, snapshot


def _label(labels: Mapping[str, str], *keys: str) -> str:
    """The first of `keys` that `labels` has (Istio's order of precedence), else ""."""
    return next((labels[k] for k in keys if labels.get(k)), "")


def _new_core(
    core_class: type[_core.Core], args: argparse.Namespace, settings: SidecarSettings
) -> _core.Core:
    from meshfast.errors import core_errors

    try:
        core = core_class(workers=args.workers)
    except core_errors() as exc:
        _die(f"the core did not start: {exc}", 1)
    # Istio's metrics labels: app and version as Istio reads them from the pod's labels.
    labels = settings.labels
    app = _label(labels, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
    core.set_workload(
        namespace=settings.namespace,
        name=args.workload or app,
        app=app,
        version=_label(
            labels, "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"
        ),
        principal=settings.certs.identity if settings.certs else None,
    )
    if args.access_log is not None:
        # Before the first install: every request the sidecar serves is logged.
        try:
            core.start_access_log(args.access_log, args.access_log_fields)
        except ValueError as exc:
            core.shutdown(0.0)
            _die(f"--access-log-fields: {exc}", 2)
        except OSError as exc:
            core.shutdown(0.0)
            _die(f"--access-log: {exc}", 1)
    if args.zipkin is not None or args.otlp is not None:
        # Before the first install too: every request is traced from the start.
        sampling = args.trace_sampling
        core.start_tracing(DEFAULT_TRACE_SAMPLING if sampling is None else sampling)
    return core


def _deploy_and_start(
    core_class: type[_core.Core],
    args: argparse.Namespace,
    settings: SidecarSettings,
    entry: str | None,
) -> int | tuple[_core.Core, Deployment, bool]:
    """Deploys the config (:func:`meshfast.deploy.deploy`) and starts the core on it (or,
    with DNS endpoints, only starts the core: the names are resolved first).  Stores the
    snapshot in the cache under ``entry`` when it needs nothing else to serve.  An int: the
    exit status; else the core, the deployment and whether the core serves it already."""
    from meshfast.config import ConfigError
    from meshfast.control.settings import options_for
    from meshfast.deploy import install
    from meshfast.errors import core_errors

    try:
        # The options POST /config reloads use too (Reloader.options).
        deployment = _deploy(args, options_for(settings, version=1))
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stderr)
        return 1
    _print_problems(deployment.config.warnings, sys.stderr)
    core = _new_core(core_class, args, settings)
    if deployment.plan:
        return core, deployment, False
    # Nothing to resolve first: start the data plane now, before Trio and the admin API are
    # imported and bound (they take longer than the core does).
    try:
        install(core, deployment.data, deployment.dispatcher)
    except core_errors() as exc:
        core.shutdown(0.0)
        _die(f"the core refused the config ({type(exc).__name__}): {exc}", 1)
    if deployment.cacheable and entry is not None:
        from meshfast.control import snapshot_cache

        snapshot_cache.store(entry, deployment.data)
    return core, deployment, True


def cmd_run(args: argparse.Namespace) -> int:
    for flag, dest, _ in NOT_IMPLEMENTED_RUN_FLAGS:
        if getattr(args, dest) is not None:
            _die(f"{flag} is not implemented yet", 2)
    if args.access_log_fields is not None and args.access_log is None:
        _die("--access-log-fields needs --access-log", 2)
    tracing = args.zipkin is not None or args.otlp is not None
    if args.trace_sampling is not None and not tracing:
        _die("--trace-sampling needs --zipkin or --otlp", 2)
    if tracing:
        from meshfast.tracing.post import parse

        for flag, url in (("--zipkin", args.zipkin), ("--otlp", args.otlp)):
            try:
                if url is not None:
                    parse(url, "/")
            except ValueError as exc:
                _die(f"{flag}: {exc}", 2)
    from meshfast.control import logs

    logs.setup()  # stderr, WARNING; POST /logging changes it

    import time

    from meshfast.control import lazy_stdlib
    from meshfast.control.settings import SidecarSettings
    from meshfast.errors import core_errors

    # Before the files are read: --watch reloads a file changed since (while starting).
    read_at_ns = time.time_ns()

    # Before anything imports Trio: its TLS modules load only if something uses them.
    lazy_stdlib.defer("ssl", "hmac")
    settings = SidecarSettings(
        admin=args.admin,
        namespace=args.namespace,
        outbound=args.outbound,
        inbound=args.inbound,
        app=args.app,
        drain_timeout=args.drain_timeout,
        sources=tuple(args.paths),
        gateway=args.gateway,
        gateway_bind=args.gateway_bind,
        locality=args.locality,
        labels=args.labels,
        root_namespace=args.root_namespace,
        trust_domain=args.trust_domain,
        trust_domain_aliases=args.trust_domain_aliases,
        dns_refresh=args.dns_refresh,
        certs=_mesh_identity(args.certs),
        ca=_renewing_ca(args.ca, args.certs),
        path_normalization=cast("PathNormalization", args.path_normalization.lower()),
        original_dst_header=args.original_dst_header,
        request_headers_timeout=args.request_headers_timeout,
        idle_timeout=args.idle_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        max_connections=args.max_connections,
        watch=args.watch,
        read_at_ns=read_at_ns,
    )
    core_class = _import_core()
    entry = _cache_entry(args, settings) if args.snapshot_cache else None
    started = _start_from_cache(core_class, args, settings, entry) if entry is not None else None
    snapshot: ir.Snapshot | EncodedSnapshot
    if started is not None:
        core, snapshot = started
        plan, dispatcher, applied = None, None, True
    else:
        loaded = _deploy_and_start(core_class, args, settings, entry)
        if isinstance(loaded, int):
            return loaded
        core, deployment, applied = loaded
        snapshot, plan, dispatcher = deployment.snapshot, deployment.plan, deployment.dispatcher
        del deployment  # (not its config: an idle sidecar from the command line keeps none)

    # Only now: the core serves already (unless DNS names must be resolved first).
    import trio

    from meshfast.control.sidecar import Sidecar

    tasks: list[Callable[[], Awaitable[None]]] = []
    if tracing:
        from meshfast.tracing import export

        try:
            exporter = export.build(core, args.zipkin, args.otlp, _local(settings))
        except ValueError as exc:
            core.shutdown(0.0)
            _die(f"--otlp: {exc}", 1)
        tasks.append(exporter.run)
    sidecar = Sidecar(
        core,
        snapshot,
        settings,
        dns_plan=plan,
        applied=applied,
        filters=dispatcher,
        tasks=tasks,
    )

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            ready = await nursery.start(partial(sidecar.serve, handle_signals=True))
            print(ready.line(), flush=True)

    try:
        trio.run(serve)
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130
    except BaseException as exc:
        error = _single(exc)
        if isinstance(error, OSError):
            _die(f"cannot listen: {error.strerror or error}", 1)
        if isinstance(error, core_errors()):
            _die(f"the core refused the config ({type(error).__name__}): {error}", 1)
        raise
    return 0


def _local(settings: SidecarSettings) -> Local:
    """This sidecar in its spans: Istio's ``{app}.{namespace}`` and an Envoy-like node id."""
    import socket

    from meshfast.tracing.tags import Local

    app = settings.labels.get("app", "unknown")
    service = f"{app}.{settings.namespace}"
    return Local(service, f"sidecar~{socket.gethostname()}~{service}")


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def cmd_echo(args: argparse.Namespace) -> int:
    import signal
    import threading

    try:
        from meshfast import _core
    except ImportError as exc:
        _die(f"the Rust core is not built ({exc}); build it with `maturin develop -r`", 1)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = _core.EchoServer(
                args.listen,
                name=args.name,
                status=args.status,
                delay_ms=args.delay_ms,
                workers=args.workers,
            )
        except (_core.CoreError, OSError) as exc:
            _die(f"echo could not listen on {args.listen}: {exc}", 1)
        try:
            print(f"meshfast echo listening on {server.address}", flush=True)
            while not stop.wait(0.5):  # a timed wait stays interruptible by signals
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from meshfast.demo import run_demo

    return run_demo(requests=args.requests, serve=args.serve)


def cmd_export_envoy(args: argparse.Namespace) -> int:
    from meshfast.bench.envoy_export import ExportError, bootstrap_yaml
    from meshfast.config import CompileOptions, ConfigError, compile_config

    try:
        config = _load(args)
        options = CompileOptions(namespace=args.namespace, outbound=args.outbound, version=1)
        snapshot = compile_config(config, options)
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stderr)
        return 1
    try:
        text = bootstrap_yaml(snapshot, admin_port=args.admin_port, workers=args.workers)
    except ExportError as exc:
        _die(f"cannot export to Envoy: {exc}", 1)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            _die(f"cannot write {args.output}: {exc.strerror or exc}", 1)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meshfast.bench.harness import BenchOptions, run_bench
    from meshfast.bench.report import render_table
    from meshfast.bench.scenarios import SCENARIOS
    from meshfast.bench.tools import ToolError

    unknown = [s for s in args.scenarios or () if s not in SCENARIOS]
    if unknown:
        _die(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}", 2)
    options = BenchOptions.make(
        Path(args.out),
        quick=args.quick,
        scenarios=args.scenarios,
        proxies=args.proxies,
        workers=args.workers,
        runs=args.runs,
        duration_s=args.duration,
        upstream=args.upstream,
        install=args.install,
    )
    try:
        outcome = run_bench(options)
    except ToolError as exc:
        _die(str(exc), 1)
    except KeyboardInterrupt:
        print("meshfast bench: interrupted (every process it started was stopped)", file=sys.stderr)
        return 130
    print(render_table(outcome.records, outcome.results["ratios"]))
    for item in outcome.results["skipped"]:
        print(f"skipped {item['scenario']}/{item['proxy']}: {item['reason']}")
    print()
    for path in (outcome.results_path, outcome.markdown_path, outcome.plot_path):
        if path is not None:
            print(f"wrote {path}")
    for failure in outcome.failures:
        print(f"meshfast bench: {failure}", file=sys.stderr)
    return 1 if outcome.failures else 0


def _add_ca(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = commands.add_parser("ca", help="a mesh CA and workload certificates")
    steps = ca.add_subparsers(dest="ca_command", required=True, metavar="STEP")
    init = steps.add_parser("init", help="create a root CA in DIR (root-cert.pem, root-key.pem)")
    init.add_argument("--dir", required=True, metavar="DIR")
    init.add_argument("--trust-domain", default="cluster.local", metavar="DOMAIN")
    init.add_argument("--days", default=3650, type=_positive_int, metavar="N")
    issue = steps.add_parser(
        "issue", help="a workload identity: OUT/key.pem, cert-chain.pem, root-cert.pem"
    )
    issue.add_argument("--dir", required=True, metavar="DIR", help="the CA's folder")
    issue.add_argument("--namespace", required=True, metavar="NS")
    issue.add_argument("--service-account", required=True, metavar="SA")
    issue.add_argument("--out", required=True, metavar="OUT")
    issue.add_argument("--days", default=1, type=_positive_int, metavar="N")


def cmd_ca(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meshfast.security import ca

    try:
        if args.ca_command == "init":
            cert = ca.init_ca(Path(args.dir), trust_domain=args.trust_domain, days=args.days)
            print(f"wrote {cert} and {Path(args.dir) / ca.ROOT_KEY} ({args.trust_domain})")
            return 0
        issued = ca.issue(
            Path(args.dir),
            Path(args.out),
            namespace=args.namespace,
            service_account=args.service_account,
            days=args.days,
        )
    except (OSError, ValueError) as exc:
        _die(str(exc), 1)
    until = f"{issued.not_after:%Y-%m-%d %H:%M} UTC"
    print(f"wrote {issued.folder}: {issued.identity}, valid until {until}")
    return 0


def _add_explain(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "explain", help="which route a request takes and why, with where it goes next"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-c",
        "--config",
        dest="paths",
        metavar="PATH",
        action="extend",
        nargs="+",
        help="explain offline, on these config files or folders",
    )
    source.add_argument(
        "--admin",
        type=_address,
        metavar="ADDR",
        help="explain on what a running sidecar serves (its admin API), endpoints live",
    )
    p.add_argument(
        "--request",
        required=True,
        metavar="'METHOD URL'",
        help="the request, e.g. 'GET http://reviews:9080/api?x=1'",
    )
    p.add_argument(
        "-H", "--header", dest="headers", action="append", default=[], metavar="'NAME: VALUE'"
    )
    p.add_argument("--listener", metavar="NAME", help="default: outbound")
    p.add_argument("--namespace", default="default", metavar="NS", help="the sidecar's (-c)")
    p.add_argument(
        "--source-labels",
        type=_labels,
        default={},
        metavar="K=V,…",
        help="the sidecar's labels (-c): sourceLabels matches are decided by them",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of text")


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from meshfast import explain as ex
    from meshfast.config import CompileOptions, ConfigError

    try:
        request = ex.Request.parse(args.request, args.headers)
    except ValueError as exc:
        _die(str(exc), 2)
    config = None
    live = None
    try:
        if args.admin is not None:
            snapshot, live = ex.fetch_live(args.admin)
        else:
            options = CompileOptions(namespace=args.namespace, labels=args.source_labels)
            deployment = _deploy(args, options)
            snapshot, config = deployment.snapshot, deployment.config
        answer = ex.explain(
            snapshot, request, listener=args.listener, config=config, live_clusters=live
        )
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        _die(f"explain: {exc}", 1)
    if args.json:
        print(json.dumps(answer.to_json(), indent=2))
    else:
        sys.stdout.write(ex.render(answer))
    return 0 if answer.route is not None else 3


def cmd_not_implemented(args: argparse.Namespace) -> int:
    _die(f"`{args.command}` is not implemented yet (see the issues)", 2)


COMMANDS = {
    "run": cmd_run,
    "ca": cmd_ca,
    "validate": cmd_validate,
    "echo": cmd_echo,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "export-envoy": cmd_export_envoy,
    "explain": cmd_explain,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (usage errors included: 2)."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.command in NOT_IMPLEMENTED_COMMANDS:
            return cmd_not_implemented(args)  # whatever arguments it was given
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
