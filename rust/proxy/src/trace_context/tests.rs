use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("valid"),
            HeaderValue::from_str(v).expect("valid"),
        );
    }
    h
}

const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
const SPAN: u64 = 0x00f067aa0ba902b7;

#[test]
fn traceparent_gives_the_parent_and_the_decision() {
    let h = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )]);
    let i = extract(&h);
    assert_eq!(i.parent, Some((TRACE, SPAN)));
    assert_eq!(i.sampled, Some(true));
    assert_eq!(i.b3, B3Forms::default());
    let h = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    assert_eq!(extract(&h).sampled, Some(false));
}

#[test]
fn malformed_traceparents_are_ignored() {
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "",
        "garbage",
    ] {
        let i = extract(&headers(&[("traceparent", bad)]));
        assert_eq!(i, Incoming::default(), "{bad:?}");
    }
    // A later version may add fields.
    let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
    assert_eq!(
        extract(&headers(&[("traceparent", later)])).parent,
        Some((TRACE, SPAN))
    );
}

#[test]
fn b3_multi_headers_and_their_short_ids() {
    let h = headers(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-sampled", "1"),
    ]);
    let i = extract(&h);
    assert_eq!(i.parent, Some((0xa3ce929d0e0e4736, SPAN)));
    assert_eq!(i.sampled, Some(true));
    assert!(i.b3.multi && i.b3.short_id && !i.b3.single);
    // A decision alone.
    let i = extract(&headers(&[("x-b3-sampled", "0")]));
    assert_eq!((i.parent, i.sampled), (None, Some(false)));
    assert!(i.b3.multi);
    // Debug forces sampling.
    let i = extract(&headers(&[("x-b3-sampled", "0"), ("x-b3-flags", "1")]));
    assert_eq!(i.sampled, Some(true));
    // A bad span id: no parent, but still a B3 request.
    let i = extract(&headers(&[
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-b3-spanid", "xyz"),
    ]));
    assert_eq!(i.parent, None);
    assert!(i.b3.multi);
}

#[test]
fn single_b3_header() {
    let i = extract(&headers(&[(
        "b3",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90",
    )]));
    assert_eq!((i.parent, i.sampled), (Some((TRACE, SPAN)), Some(true)));
    assert!(i.b3.single && !i.b3.multi);
    let i = extract(&headers(&[(
        "b3",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    )]));
    assert_eq!((i.parent, i.sampled), (Some((TRACE, SPAN)), None));
    let i = extract(&headers(&[("b3", "0")]));
    assert_eq!((i.parent, i.sampled), (None, Some(false)));
    let i = extract(&headers(&[("b3", "d")]));
    assert_eq!(i.sampled, Some(true));
    for bad in [
        "4bf92f35-00f067aa0ba902b7",
        "x-y-z",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-7",
    ] {
        assert_eq!(extract(&headers(&[("b3", bad)])).parent, None, "{bad}");
    }
}

#[test]
fn traceparent_wins_over_b3() {
    let i = extract(&headers(&[
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        ("x-b3-traceid", "11111111111111111111111111111111"),
        ("x-b3-spanid", "2222222222222222"),
        ("x-b3-sampled", "1"),
    ]));
    assert_eq!((i.parent, i.sampled), (Some((TRACE, SPAN)), Some(false)));
    assert!(i.b3.multi);
}

#[test]
fn a_child_keeps_the_trace_and_the_callers_decision() {
    let incoming = Incoming {
        parent: Some((TRACE, SPAN)),
        sampled: Some(false),
        b3: B3Forms::default(),
    };
    let c = SpanContext::child(&incoming, || panic!("the caller decided"));
    assert_eq!((c.trace_id, c.parent_id, c.sampled), (TRACE, SPAN, false));
    assert_ne!(c.span_id, 0);
    let root = SpanContext::child(&Incoming::default(), || true);
    assert_eq!(root.parent_id, 0);
    assert!(root.trace_id >> 64 != 0 || root.trace_id != 0);
    assert!(root.sampled);
}

#[test]
fn injection_writes_w3c_always_and_b3_as_it_came() {
    let c = SpanContext {
        trace_id: TRACE,
        span_id: 0x1111111111111111,
        parent_id: SPAN,
        sampled: true,
    };
    let mut h = headers(&[("tracestate", "k=v")]);
    c.inject(&mut h, B3Forms::default());
    assert_eq!(
        h["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
    );
    assert_eq!(h["tracestate"], "k=v");
    assert!(!h.contains_key("x-b3-traceid") && !h.contains_key("b3"));

    let mut h = headers(&[("x-b3-traceid", "x"), ("x-b3-sampled", "0")]);
    let forms = B3Forms {
        multi: true,
        single: true,
        short_id: false,
    };
    c.inject(&mut h, forms);
    assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(h["x-b3-spanid"], "1111111111111111");
    assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
    assert_eq!(h["x-b3-sampled"], "1");
    assert_eq!(
        h["b3"],
        "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1-00f067aa0ba902b7"
    );

    let short = SpanContext {
        trace_id: 0xa3ce929d0e0e4736,
        parent_id: 0,
        sampled: false,
        ..c
    };
    let mut h = headers(&[("x-b3-parentspanid", "stale")]);
    let forms = B3Forms {
        multi: true,
        single: false,
        short_id: true,
    };
    short.inject(&mut h, forms);
    assert_eq!(h["x-b3-traceid"], "a3ce929d0e0e4736");
    assert!(!h.contains_key("x-b3-parentspanid"));
    assert_eq!(h["x-b3-sampled"], "0");
    assert_eq!(
        h["traceparent"],
        "00-0000000000000000a3ce929d0e0e4736-1111111111111111-00"
    );
}

#[test]
fn round_trip_through_the_headers() {
    let c = SpanContext::child(&Incoming::default(), || true);
    let mut h = HeaderMap::new();
    c.inject(&mut h, B3Forms::default());
    let i = extract(&h);
    assert_eq!(i.parent, Some((c.trace_id, c.span_id)));
    assert_eq!(i.sampled, Some(true));
}
