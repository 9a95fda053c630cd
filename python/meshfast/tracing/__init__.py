"""Tracing: spans handed over by the core in batches (:mod:`meshfast.tracing.spans`)."""
