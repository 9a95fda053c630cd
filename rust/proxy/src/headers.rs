//! Istio `headers.{request,response}` operations, parsed once per snapshot,
//! and the hop-by-hop headers no proxy forwards.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use meshfast_ir as ir;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("invalid header name {0:?}")]
    Name(String),
    #[error("invalid value for header {0:?}")]
    Value(String),
}

/// Applied as remove, then set (overwrite), then add (append).
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn build(ops: &ir::HeaderOps) -> Result<Self, HeaderError> {
        let pairs = |list: &[ir::HeaderValue]| -> Result<Vec<_>, HeaderError> {
            list.iter()
                .map(|h| Ok((name(&h.name)?, value(&h.name, &h.value)?)))
                .collect()
        };
        Ok(Self {
            set: pairs(&ops.set)?,
            add: pairs(&ops.add)?,
            remove: ops
                .remove
                .iter()
                .map(|n| name(n))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// `:authority` is HTTP/1.1's `Host`; Istio lets `set` rewrite it either way.
fn name(n: &str) -> Result<HeaderName, HeaderError> {
    let lower = n.to_ascii_lowercase();
    let lower = if lower == ":authority" {
        "host".to_owned()
    } else {
        lower
    };
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| HeaderError::Name(n.to_owned()))
}

fn value(n: &str, v: &str) -> Result<HeaderValue, HeaderError> {
    HeaderValue::from_str(v).map_err(|_| HeaderError::Value(n.to_owned()))
}

/// Connection-scoped headers describe one hop and must not be forwarded (RFC 9110 7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        if let Ok(conn) = conn.to_str() {
            for name in conn.split(',') {
                let name = name.trim();
                if !name.is_empty() && !name.eq_ignore_ascii_case("te") {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // TE may only say "trailers" past the first hop (gRPC relies on it).
    if let Some(te) = headers.get(header::TE) {
        if te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            return;
        }
        headers.remove(header::TE);
    }
}

/// A count of milliseconds as a header value (`x-meshfast-upstream-service-time`):
/// under 100 — most answers — a static value, so no allocation per response.
pub fn millis_value(ms: u64) -> http::HeaderValue {
    const SMALL: [&str; 100] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
        "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46",
        "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61",
        "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76",
        "77", "78", "79", "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91",
        "92", "93", "94", "95", "96", "97", "98", "99",
    ];
    match usize::try_from(ms).ok().and_then(|i| SMALL.get(i)) {
        Some(s) => http::HeaderValue::from_static(s),
        None => http::HeaderValue::from(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_render_the_same_static_or_not() {
        for ms in [0, 7, 99, 100, 12_345, u64::MAX] {
            assert_eq!(
                millis_value(ms).to_str().ok(),
                Some(ms.to_string().as_str())
            );
        }
    }

    fn hv(name: &str, value: &str) -> ir::HeaderValue {
        ir::HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOps::build(&ir::HeaderOps {
            set: vec![hv("X-Set", "s"), hv(":authority", "new-host")],
            add: vec![hv("x-add", "a2")],
            remove: vec!["x-gone".into()],
        })
        .expect("build");
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("a1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        ops.apply(&mut h);
        assert_eq!(h["x-set"], "s");
        assert_eq!(h["host"], "new-host");
        assert!(h.get("x-gone").is_none());
        let adds: Vec<_> = h.get_all("x-add").iter().collect();
        assert_eq!(adds, ["a1", "a2"]);
    }

    #[test]
    fn bad_names_are_build_errors() {
        let ops = ir::HeaderOps {
            remove: vec!["bad name".into()],
            ..Default::default()
        };
        assert!(HeaderOps::build(&ops).is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-kept").is_some());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const HOP: [&str; 7] = [
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "keep-alive",
            "proxy-connection",
            "te",
        ];

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(HOP.to_vec()).prop_map(str::to_owned),
                "x-[a-z]{1,6}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Nothing hop-by-hop survives, nothing else is lost, whatever
            /// the client lists in Connection.
            #[test]
            fn only_end_to_end_headers_survive(
                headers in proptest::collection::vec((name(), "[ -~]{0,12}"), 0..12),
                listed in proptest::collection::vec(name(), 0..4),
            ) {
                let mut h = HeaderMap::new();
                for (n, v) in &headers {
                    if let (Ok(n), Ok(v)) = (HeaderName::try_from(n.as_str()), HeaderValue::try_from(v.as_str())) {
                        h.append(n, v);
                    }
                }
                if let Ok(v) = HeaderValue::try_from(listed.join(", ")) {
                    h.append(header::CONNECTION, v);
                }
                let before = h.clone();
                strip_hop_by_hop(&mut h);
                for hop in HOP {
                    if hop == "te" {
                        prop_assert!(h.get_all(hop).iter().all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")));
                    } else {
                        prop_assert!(h.get(hop).is_none(), "{} survived", hop);
                    }
                }
                for n in before.keys() {
                    let listed_here = listed.iter().any(|l| l.eq_ignore_ascii_case(n.as_str()));
                    if !HOP.contains(&n.as_str()) && !listed_here {
                        prop_assert_eq!(before.get_all(n).iter().count(), h.get_all(n).iter().count());
                    }
                }
            }
        }
    }
}
