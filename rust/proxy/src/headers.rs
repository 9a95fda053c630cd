//! Istio `headers.{request,response}` operations, parsed once per snapshot.

use http::header::{HeaderMap, HeaderName, HeaderValue};
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
