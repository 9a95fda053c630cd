//! Span batches: how finished request spans will travel from the workers to
//! the Python tracing exporter — many spans per crossing, in one flat buffer
//! that Python decodes without a per-field call into Rust.
//!
//! Layout (little-endian), version 2:
//!
//! ```text
//! batch   = "MFSB" version:u8 0:u8 count:u16 dropped:u32 record*count
//! record  = trace_hi:u64 trace_lo:u64 span_id:u64 parent_id:u64
//!           start_unix_ns:u64 duration_ns:u64 upstream_ns:u64
//!           bytes_in:u64 bytes_out:u64
//!           status:u16 kind:u8 flags:u8
//!           (len:u16 utf8)*10  -- name method authority path cluster upstream
//!                                 request_id response_flags route peer
//! ```
//!
//! Version 2 added `upstream_ns` (the upstream's time to its response head:
//! the span's duration minus it is the proxy's own), `route` and `peer`.
//!
//! `dropped` counts spans refused since the previous batch because a batch
//! was full: the buffer is bounded (spans and bytes), and the exporter reports
//! the loss instead of the workers waiting for it.

/// One finished span, as the exporter sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanRecord {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: a root span.
    pub parent_id: u64,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// The upstream's time to its response head, retries included (flag
    /// bit 2 says whether an upstream answered at all).
    pub upstream_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub status: u16,
    /// 0: server (inbound), 1: client (outbound).
    pub kind: u8,
    /// Bit 0: sampled; bit 1: error (5xx or no upstream answer); bit 2:
    /// an upstream answered (`upstream_ns` is its time).
    pub flags: u8,
    pub name: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub cluster: String,
    pub upstream: String,
    pub request_id: String,
    pub response_flags: String,
    /// The route's name ("" when none matched).
    pub route: String,
    /// The downstream peer's `ip:port`.
    pub peer: String,
}

pub const FLAG_SAMPLED: u8 = 1;
pub const FLAG_ERROR: u8 = 2;
pub const FLAG_UPSTREAM: u8 = 4;

pub const MAGIC: &[u8; 4] = b"MFSB";
pub const VERSION: u8 = 2;
/// The most spans one batch holds (its count is a u16).
pub const MAX_SPANS: usize = u16::MAX as usize;
/// A string field longer than this is cut (at a character boundary).
pub const MAX_FIELD: usize = 4096;

/// A bounded batch being filled: spans that do not fit are counted, not kept.
#[derive(Debug)]
pub struct SpanBatch {
    buf: Vec<u8>,
    count: u16,
    dropped: u32,
    max_spans: usize,
    max_bytes: usize,
}

impl SpanBatch {
    pub fn new(max_spans: usize, max_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(max_bytes.min(1 << 16));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&[VERSION, 0, 0, 0, 0, 0, 0, 0]);
        Self {
            buf,
            count: 0,
            dropped: 0,
            max_spans: max_spans.min(MAX_SPANS),
            max_bytes,
        }
    }

    /// Adds `span`, or counts it as dropped when the batch is full.
    pub fn push(&mut self, span: &SpanRecord) -> bool {
        let start = self.buf.len();
        if usize::from(self.count) >= self.max_spans {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        encode_record(&mut self.buf, span);
        if self.buf.len() > self.max_bytes {
            self.buf.truncate(start);
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.count += 1;
        true
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[6..8].copy_from_slice(&self.count.to_le_bytes());
        self.buf[8..12].copy_from_slice(&self.dropped.to_le_bytes());
        self.buf
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u16).to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

fn encode_record(buf: &mut Vec<u8>, s: &SpanRecord) {
    for n in [
        (s.trace_id >> 64) as u64,
        s.trace_id as u64,
        s.span_id,
        s.parent_id,
        s.start_unix_ns,
        s.duration_ns,
        s.upstream_ns,
        s.bytes_in,
        s.bytes_out,
    ] {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    buf.extend_from_slice(&s.status.to_le_bytes());
    buf.push(s.kind);
    buf.push(s.flags);
    for field in [
        &s.name,
        &s.method,
        &s.authority,
        &s.path,
        &s.cluster,
        &s.upstream,
        &s.request_id,
        &s.response_flags,
        &s.route,
        &s.peer,
    ] {
        put_str(buf, field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u64) -> SpanRecord {
        SpanRecord {
            trace_id: (u128::from(i) << 64) | 7,
            span_id: i,
            name: format!("span-{i}"),
            path: "/é".into(),
            status: 200,
            ..Default::default()
        }
    }

    #[test]
    fn header_counts_and_limits() {
        let mut batch = SpanBatch::new(2, 1 << 20);
        assert!(batch.push(&span(1)));
        assert!(batch.push(&span(2)));
        assert!(!batch.push(&span(3)));
        let bytes = batch.finish();
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(bytes[4], VERSION);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 2);
        assert_eq!(
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            1
        );
    }

    #[test]
    fn a_span_past_the_byte_limit_is_dropped_whole() {
        let mut batch = SpanBatch::new(10, 12 + 100);
        let mut big = span(1);
        big.path = "x".repeat(200);
        assert!(!batch.push(&big));
        assert!(batch.is_empty());
        let bytes = batch.finish();
        assert_eq!(bytes.len(), 12);
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let mut buf = Vec::new();
        put_str(&mut buf, &"é".repeat(MAX_FIELD));
        let len = usize::from(u16::from_le_bytes([buf[0], buf[1]]));
        assert!(len <= MAX_FIELD);
        assert!(std::str::from_utf8(&buf[2..2 + len]).is_ok());
    }
}
