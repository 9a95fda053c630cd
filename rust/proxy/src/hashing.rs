//! The request side of consistent hashing: which bytes of a request are its
//! key, and the cookie the proxy generates when the key cookie is absent.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use meshfast_balance::{key_hash, HashTable};
use meshfast_ir as ir;
use std::net::SocketAddr;

#[derive(Debug)]
pub struct HashRt {
    source: ir::HashSource,
    header: Option<HeaderName>,
    name: String,
    cookie_ttl_s: Option<u64>,
    cookie_path: Option<String>,
    pub table: HashTable,
}

/// A request's hash, and the `Set-Cookie` to add to its response if the
/// proxy generated the key cookie.
#[derive(Debug, Default)]
pub struct Key {
    pub hash: Option<u64>,
    pub set_cookie: Option<HeaderValue>,
}

impl HashRt {
    pub fn build(policy: &ir::HashPolicy, addresses: &[&str], weights: &[u32]) -> Self {
        let table = match policy.algorithm {
            ir::HashAlgorithm::Ring => {
                HashTable::ring(addresses, weights, policy.table_size.max(1))
            }
            ir::HashAlgorithm::Maglev => {
                HashTable::maglev(addresses, weights, policy.table_size.max(2))
            }
        };
        Self {
            source: policy.source,
            header: HeaderName::from_bytes(policy.name.to_ascii_lowercase().as_bytes()).ok(),
            name: policy.name.clone(),
            cookie_ttl_s: policy.cookie_ttl_ms.map(|ms| ms.div_ceil(1000)),
            cookie_path: policy.cookie_path.clone(),
            table,
        }
    }

    /// The key of a TCP connection: only `useSourceIp` has one.
    pub fn source_ip_key(&self, peer: SocketAddr) -> Option<u64> {
        (self.source == ir::HashSource::SourceIp)
            .then(|| key_hash(peer.ip().to_string().as_bytes()))
    }

    pub fn key(&self, headers: &HeaderMap, query: Option<&str>, peer: SocketAddr) -> Key {
        match self.source {
            ir::HashSource::Header => Key {
                hash: self
                    .header
                    .as_ref()
                    .and_then(|h| headers.get(h))
                    .map(|v| key_hash(v.as_bytes())),
                set_cookie: None,
            },
            ir::HashSource::SourceIp => Key {
                hash: Some(key_hash(peer.ip().to_string().as_bytes())),
                set_cookie: None,
            },
            ir::HashSource::Query => Key {
                hash: query.and_then(|q| {
                    q.split('&').find_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (k == self.name).then(|| key_hash(v.as_bytes()))
                    })
                }),
                set_cookie: None,
            },
            ir::HashSource::Cookie => match cookie(headers, &self.name) {
                Some(v) => Key {
                    hash: Some(key_hash(v.as_bytes())),
                    set_cookie: None,
                },
                None => self.generate_cookie(),
            },
        }
    }

    /// Envoy's generated cookie: a fresh value whose hash picks the endpoint,
    /// returned so that the client's next requests stick to it.
    fn generate_cookie(&self) -> Key {
        let Some(ttl) = self.cookie_ttl_s else {
            return Key::default();
        };
        let value = format!("{:016x}", fastrand::u64(..));
        let mut cookie = format!("{}=\"{value}\"", self.name);
        if ttl > 0 {
            cookie.push_str(&format!("; Max-Age={ttl}"));
        }
        if let Some(path) = &self.cookie_path {
            cookie.push_str(&format!("; Path={path}"));
        }
        cookie.push_str("; HttpOnly");
        Key {
            hash: Some(key_hash(format!("\"{value}\"").as_bytes())),
            set_cookie: HeaderValue::from_str(&cookie).ok(),
        }
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(source: ir::HashSource, name: &str, ttl: Option<u64>) -> HashRt {
        let p = ir::HashPolicy {
            source,
            name: name.into(),
            cookie_ttl_ms: ttl,
            cookie_path: Some("/".into()),
            algorithm: ir::HashAlgorithm::Ring,
            table_size: 1024,
        };
        HashRt::build(&p, &["a:1", "b:1"], &[1, 1])
    }

    fn peer() -> SocketAddr {
        "127.0.0.9:5555".parse().expect("addr")
    }

    #[test]
    fn keys_from_header_cookie_query_and_source() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("jason"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=\"abc\""),
        );
        assert_eq!(
            policy(ir::HashSource::Header, "X-User", None)
                .key(&h, None, peer())
                .hash,
            Some(key_hash(b"jason"))
        );
        assert_eq!(
            policy(ir::HashSource::Cookie, "session", None)
                .key(&h, None, peer())
                .hash,
            Some(key_hash(b"\"abc\""))
        );
        assert_eq!(
            policy(ir::HashSource::Query, "u", None)
                .key(&h, Some("x=1&u=7"), peer())
                .hash,
            Some(key_hash(b"7"))
        );
        assert_eq!(
            policy(ir::HashSource::SourceIp, "", None)
                .key(&h, None, peer())
                .hash,
            Some(key_hash(b"127.0.0.9"))
        );
        assert_eq!(
            policy(ir::HashSource::Header, "x-none", None)
                .key(&h, None, peer())
                .hash,
            None
        );
    }

    #[test]
    fn missing_cookie_is_generated_only_with_a_ttl() {
        let h = HeaderMap::new();
        assert!(policy(ir::HashSource::Cookie, "s", None)
            .key(&h, None, peer())
            .set_cookie
            .is_none());
        let key = policy(ir::HashSource::Cookie, "s", Some(60_000)).key(&h, None, peer());
        let set = key.set_cookie.expect("generated");
        let set = set.to_str().expect("ascii");
        assert!(
            set.starts_with("s=\"") && set.contains("Max-Age=60") && set.contains("Path=/"),
            "{set}"
        );
        // The client sending it back hashes to the same point.
        let value = &set[2..set.find(';').expect(";")];
        assert_eq!(key.hash, Some(key_hash(value.as_bytes())));
    }
}
