//! Path normalization before routing (Istio's meshConfig `pathNormalization`):
//! a route that guards `/admin` must see `/public/../admin`, `/%61dmin`,
//! `/./admin` and `/public\..\admin` as `/admin`, and the upstream must get
//! the path that was matched, not the one that was sent.
//!
//! `Base` is RFC 3986 normalization as Envoy's `normalize_path` does it
//! (Chromium's path canonicalizer): percent-encoded unreserved characters
//! decoded, the hex of other escapes upper-cased, backslashes as slashes, dot
//! segments removed. `MergeSlashes` also collapses `//`; `DecodeAndMergeSlashes`
//! also decodes `%2F` and `%5C` first (Envoy's `UNESCAPE_AND_FORWARD`).

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Normalization {
    /// The path as the client sent it.
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl From<meshfast_ir::PathNormalization> for Normalization {
    fn from(n: meshfast_ir::PathNormalization) -> Self {
        use meshfast_ir::PathNormalization as P;
        match n {
            P::None => Self::None,
            P::Base => Self::Base,
            P::MergeSlashes => Self::MergeSlashes,
            P::DecodeAndMergeSlashes => Self::DecodeAndMergeSlashes,
        }
    }
}

/// `path` (without its query) normalized; borrowed when it already was, so
/// the common request allocates nothing. Only origin-form paths (`/...`) are
/// touched.
pub fn normalize(path: &str, how: Normalization) -> Cow<'_, str> {
    if how == Normalization::None || !path.starts_with('/') || is_normal(path, how) {
        return Cow::Borrowed(path);
    }
    let decode_slashes = how == Normalization::DecodeAndMergeSlashes;
    let mut decoded = decode(path, decode_slashes);
    if how != Normalization::Base {
        decoded = merge_slashes(&decoded);
    }
    Cow::Owned(remove_dot_segments(&decoded))
}

/// Nothing to do: no escape, no backslash, no dot segment, and (when
/// merging) no empty segment.
fn is_normal(path: &str, how: Normalization) -> bool {
    if path.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
    if how != Normalization::Base && path.contains("//") {
        return false;
    }
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Unreserved escapes decoded (and `%2F`/`%5C` when asked), other escapes
/// upper-cased, backslashes made slashes; a stray `%` becomes `%25`.
fn decode(path: &str, decode_slashes: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (b, escaped) {
            (_, Some(v)) if is_unreserved(v) => out.push(v),
            (_, Some(b'/' | b'\\')) if decode_slashes => out.push(b'/'),
            (_, Some(v)) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]])
            }
            // A `%` that starts no escape is escaped itself: decoding never
            // makes a new escape out of what follows (normalizing is idempotent).
            (b'%', None) => out.extend_from_slice(b"%25"),
            (b'\\', None) => out.push(b'/'),
            (b, None) => out.push(b),
        }
        i += if escaped.is_some() { 3 } else { 1 };
    }
    // Only ASCII was decoded into ASCII; the rest is copied byte for byte.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments dropped, `..` removes
/// the segment before it (never above the root); a path ending in a dot
/// segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Normalization::*;

    #[test]
    fn every_bypass_of_a_guarded_prefix_is_seen_as_the_prefix() {
        for sent in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/./admin",
            "/%61dmin",
            "/public\\..\\admin",
            "/admin/.",
            "/a/b/../../admin",
            "/../admin",
        ] {
            let got = normalize(sent, Base);
            assert!(got == "/admin" || got == "/admin/", "{sent} -> {got}");
        }
        assert_eq!(
            normalize("//admin", Base),
            "//admin",
            "BASE keeps empty segments"
        );
        assert_eq!(normalize("//admin", MergeSlashes), "/admin");
        assert_eq!(
            normalize("/a%2F..%2Fadmin", MergeSlashes),
            "/a%2F..%2Fadmin"
        );
        assert_eq!(
            normalize("/a%2F..%2Fadmin", DecodeAndMergeSlashes),
            "/admin"
        );
        assert_eq!(normalize("/public/../admin", None), "/public/../admin");
    }

    #[test]
    fn escapes_of_reserved_characters_stay_escaped_with_upper_hex() {
        assert_eq!(normalize("/a%2fb", Base), "/a%2Fb");
        assert_eq!(normalize("/a%3Fb%7e", Base), "/a%3Fb~");
        assert_eq!(
            normalize("/a%zzb%4", Base),
            "/a%25zzb%254",
            "a stray % is escaped"
        );
        assert_eq!(normalize("/%%61%61", Base), "/%25aa");
        assert_eq!(normalize("/caf%C3%A9", Base), "/caf%C3%A9");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c..d/.e", "*", "/a//b"] {
            assert!(matches!(normalize(p, Base), Cow::Borrowed(_)), "{p}");
        }
        assert!(matches!(normalize("/a/b/", MergeSlashes), Cow::Borrowed(_)));
        assert!(matches!(normalize("/a//b", MergeSlashes), Cow::Owned(_)));
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        // RFC 3986 §5.4.1's examples, resolved against an absolute path.
        for (sent, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(normalize(sent, Base), want, "{sent}");
        }
    }
}
