"""``meshfast bench``: meshfast measured beside Envoy, HAProxy and a direct run, in one run.

One concept per module:

- :mod:`~meshfast.bench.envoy_export` — the compiled IR as an Envoy bootstrap
  (``meshfast export-envoy``), so Envoy serves exactly the same routes;
- :mod:`~meshfast.bench.haproxy_export` — the same IR as an HAProxy config, where HAProxy's
  simple Host → backend routing can express it;
- :mod:`~meshfast.bench.tools` — find or install the peers and load generators;
- :mod:`~meshfast.bench.procs` — pinned child processes, readiness, /proc sampling;
- :mod:`~meshfast.bench.load` — wrk and h2load runs and their parsers;
- :mod:`~meshfast.bench.scenarios` — the named scenarios (config, load shape, placement);
- :mod:`~meshfast.bench.peers` — how each proxy and upstream is started;
- :mod:`~meshfast.bench.report` — records, medians, ratios, table, results.json, RESULTS.md;
- :mod:`~meshfast.bench.plot` — the PNG (a standalone script run by a Python with matplotlib);
- :mod:`~meshfast.bench.harness` — the run loop tying them together.

Nothing here is imported by ``meshfast run``: the data plane never pays for the harness.
"""
