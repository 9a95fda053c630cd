"""Tracing: spans handed over by the core in batches (:mod:`meshfast.tracing.spans`),
exported by a Trio task (:mod:`meshfast.tracing.export`) as Zipkin v2 JSON
(:mod:`~meshfast.tracing.zipkin`) or OTLP/HTTP protobuf (:mod:`~meshfast.tracing.otlp`,
imported only with ``--otlp``) over a small h11 client (:mod:`~meshfast.tracing.post`)."""
