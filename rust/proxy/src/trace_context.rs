//! Trace context propagation, sans-IO: what a request's headers say about
//! the trace it belongs to (W3C `traceparent`, B3 multi-header and single
//! `b3`), and the headers that carry this sidecar's span to the upstream.
//!
//! Precedence on the way in, as Envoy's OpenTelemetry and Zipkin tracers
//! read them: a valid `traceparent` first, then the `x-b3-*` headers, then a
//! single `b3`. A malformed header is ignored (the request starts a new
//! root), never refused. On the way out `traceparent` is always written;
//! B3 is rewritten in each B3 form the request came with (Envoy's Zipkin
//! tracer writes B3, its OpenTelemetry tracer W3C: a sidecar between a B3
//! client and a W3C one speaks both). `tracestate` is passed on untouched.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The B3 forms a request came with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct B3Forms {
    pub multi: bool,
    pub single: bool,
    /// The trace id came as 16 hex digits (64 bits): written back the same.
    pub short_id: bool,
}

/// What the incoming headers say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's trace and span, when a header carried valid ones.
    pub parent: Option<(u128, u64)>,
    /// The caller's sampling decision, when it made one (B3 debug: sampled).
    pub sampled: Option<bool>,
    pub b3: B3Forms,
}

/// This sidecar's span of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's span (0: this span is a root).
    pub parent_id: u64,
    pub sampled: bool,
}

/// Reads the trace headers of a request.
pub fn extract(h: &HeaderMap) -> Incoming {
    let mut b3 = B3Forms {
        multi: h.contains_key(B3_TRACE_ID) || h.contains_key(B3_SAMPLED),
        single: h.contains_key(B3),
        short_id: false,
    };
    let b3_multi = multi(h);
    let b3_single = h.get(B3).and_then(|v| single(v.as_bytes()));
    if let Some(((_, _), _, short)) = b3_multi.or(b3_single).filter(|b| b.0 .0 != 0) {
        b3.short_id = short;
    }
    if let Some((trace, span, sampled)) = h.get(TRACEPARENT).and_then(traceparent) {
        return Incoming {
            parent: Some((trace, span)),
            sampled: Some(sampled),
            b3,
        };
    }
    // B3 lets a caller send only a decision (`x-b3-sampled: 0`, `b3: 0`).
    let decision = b3_multi
        .map(|b| b.1)
        .or_else(|| b3_single.map(|b| b.1))
        .flatten()
        .or_else(|| h.get(B3_SAMPLED).and_then(|v| sampled(v.as_bytes())))
        .or_else(|| h.get(B3).and_then(|v| sampled(v.as_bytes())));
    let debug = h.get(B3_FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    let parent = b3_multi.or(b3_single).map(|b| b.0).filter(|&(t, _)| t != 0);
    Incoming {
        parent,
        sampled: if debug { Some(true) } else { decision },
        b3,
    }
}

impl SpanContext {
    /// This sidecar's span: a child of the caller's, or a new root.
    /// `sample` decides when the caller did not.
    pub fn child(incoming: &Incoming, sample: impl FnOnce() -> bool) -> Self {
        let (trace_id, parent_id) = incoming
            .parent
            .unwrap_or_else(|| (new_trace_id(incoming.b3.short_id), 0));
        Self {
            trace_id,
            span_id: new_span_id(),
            parent_id,
            sampled: incoming.sampled.unwrap_or_else(sample),
        }
    }

    /// Writes this span as the parent of the upstream request.
    pub fn inject(&self, h: &mut HeaderMap, b3: B3Forms) {
        h.insert(TRACEPARENT, self.traceparent());
        if !(b3.multi || b3.single) {
            return;
        }
        let trace = if b3.short_id && self.trace_id >> 64 == 0 {
            format!("{:016x}", self.trace_id as u64)
        } else {
            format!("{:032x}", self.trace_id)
        };
        let span = format!("{:016x}", self.span_id);
        if b3.multi {
            insert(h, B3_TRACE_ID, &trace);
            insert(h, B3_SPAN_ID, &span);
            if self.parent_id == 0 {
                h.remove(B3_PARENT);
            } else {
                insert(h, B3_PARENT, &format!("{:016x}", self.parent_id));
            }
            // Debug (`x-b3-flags: 1`) implies sampled and stays as it came.
            if h.get(B3_FLAGS).is_none_or(|v| v.as_bytes() != b"1") {
                insert(h, B3_SAMPLED, if self.sampled { "1" } else { "0" });
            }
        }
        if b3.single {
            let s = if self.sampled { '1' } else { '0' };
            let value = match self.parent_id {
                0 => format!("{trace}-{span}-{s}"),
                p => format!("{trace}-{span}-{s}-{p:016x}"),
            };
            insert(h, B3, &value);
        }
    }
}

impl SpanContext {
    /// `00-{trace}-{span}-{flags}`, formatted on the stack: the header
    /// value's own bytes are the one allocation (every traced request,
    /// sampled or not, pays it).
    fn traceparent(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for i in 0..32 {
            out[3 + i] = HEX[((self.trace_id >> ((31 - i) * 4)) & 0xf) as usize];
        }
        for i in 0..16 {
            out[36 + i] = HEX[((self.span_id >> ((15 - i) * 4)) & 0xf) as usize];
        }
        out[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

fn insert(h: &mut HeaderMap, name: HeaderName, value: &str) {
    // Hex digits and dashes only: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// A random trace id, never 0 (invalid in both formats).
fn new_trace_id(short: bool) -> u128 {
    loop {
        let id = if short {
            u128::from(fastrand::u64(..))
        } else {
            fastrand::u128(..)
        };
        if id != 0 {
            return id;
        }
    }
}

/// A random span id, never 0.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// `version-traceid-parentid-flags` (W3C Trace Context level 1 §3.2):
/// lowercase hex, no all-zero ids, version `ff` invalid; a future version
/// may append fields after a dash.
fn traceparent(v: &HeaderValue) -> Option<(u128, u64, bool)> {
    let s = v.to_str().ok()?;
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex::<u8>(&s[..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace = hex::<u128>(&s[3..35])?;
    let span = hex::<u64>(&s[36..52])?;
    let flags = hex::<u8>(&s[53..55])?;
    (trace != 0 && span != 0).then_some((trace, span, flags & 1 == 1))
}

/// ((trace, span), sampled, short id) of the `x-b3-*` headers.
type B3Parsed = ((u128, u64), Option<bool>, bool);

fn multi(h: &HeaderMap) -> Option<B3Parsed> {
    let trace = h.get(B3_TRACE_ID)?.to_str().ok()?;
    let span = h.get(B3_SPAN_ID)?.to_str().ok()?;
    let (trace_id, short) = b3_trace_id(trace)?;
    let span_id = hex::<u64>(span).filter(|&s| s != 0 && span.len() == 16)?;
    let sampled = h.get(B3_SAMPLED).and_then(|v| sampled(v.as_bytes()));
    Some(((trace_id, span_id), sampled, short))
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`; a lone decision
/// (`0`, `1`, `d`) is read by [`sampled`].
fn single(v: &[u8]) -> Option<B3Parsed> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let (trace_id, short) = b3_trace_id(parts.next()?)?;
    let span = parts.next()?;
    let span_id = hex::<u64>(span).filter(|&s| s != 0 && span.len() == 16)?;
    let decision = match parts.next() {
        None => None,
        Some(d) => Some(sampled(d.as_bytes())?),
    };
    if let Some(p) = parts.next() {
        hex::<u64>(p).filter(|_| p.len() == 16)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(((trace_id, span_id), decision, short))
}

fn b3_trace_id(s: &str) -> Option<(u128, bool)> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    let id = hex::<u128>(s).filter(|&t| t != 0)?;
    Some((id, s.len() == 16))
}

/// A sampling decision: `1`/`true`/`d` (debug), `0`/`false`.
fn sampled(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"true" | b"d" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// Lowercase hex of exactly the type's width or less (no sign, no `0x`).
fn hex<T: FromHex>(s: &str) -> Option<T> {
    let ok = !s.is_empty()
        && s.len() <= T::DIGITS
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        T::from_hex(s)
    } else {
        None
    }
}

trait FromHex: Sized {
    const DIGITS: usize;
    fn from_hex(s: &str) -> Option<Self>;
}

macro_rules! from_hex {
    ($($t:ty),*) => {$(
        impl FromHex for $t {
            const DIGITS: usize = std::mem::size_of::<$t>() * 2;
            fn from_hex(s: &str) -> Option<Self> {
                <$t>::from_str_radix(s, 16).ok()
            }
        }
    )*};
}
from_hex!(u8, u64, u128);

#[cfg(test)]
mod tests;
