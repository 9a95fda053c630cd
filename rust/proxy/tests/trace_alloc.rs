//! An unsampled request costs tracing no span record: the only allocation
//! is the `traceparent` value propagated upstream. Counted by an
//! instrumented allocator (one test in this binary: the counts are global).

use http::{HeaderMap, HeaderValue, Request};
use meshfast_proxy::tracer::{Open, Tracer};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn request(traceparent: Option<&'static str>) -> Request<()> {
    let mut req = Request::new(());
    // Room for the headers tracing adds: the map itself never grows here.
    *req.headers_mut() = HeaderMap::with_capacity(16);
    if let Some(tp) = traceparent {
        req.headers_mut()
            .insert("traceparent", HeaderValue::from_static(tp));
    }
    req
}

#[test]
fn an_unsampled_request_allocates_no_span() {
    let never = Tracer::new(0.0, Arc::default()).expect("valid");
    let always = Tracer::new(100.0, Arc::default()).expect("valid");
    let caller_said_no = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    // Warm up (thread-locals, lazy statics).
    let mut warm = request(None);
    drop(never.begin(&mut warm, false));

    for (tracer, tp) in [(&never, None), (&always, Some(caller_said_no))] {
        let mut req = request(tp);
        let region = Region::new(GLOBAL);
        let span = tracer.begin(&mut req, false);
        let change = region.change();
        assert!(span.is_none());
        // One allocation: the new traceparent's bytes (55), no span record.
        assert_eq!(change.allocations, 1, "{change:?}");
        assert!(change.bytes_allocated < 64, "{change:?}");
        assert!(req.headers()["traceparent"].as_bytes().ends_with(b"-00"));
    }

    // What a sampled request allocates, for contrast: the span record.
    let mut req = request(None);
    let region = Region::new(GLOBAL);
    let span = always.begin(&mut req, false);
    let change = region.change();
    assert!(span.is_some());
    assert!(
        change.bytes_allocated >= std::mem::size_of::<Open>(),
        "{change:?}"
    );
}
