//! `_core.explain_route`: the data plane's own answer to "which route, and why
//! not the others" (`meshfast explain`), as a dict.

use crate::errors;
use meshfast_proxy::explain::{explain, Question};
use meshfast_proxy::ir::Snapshot;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// The route `listener` of the IR `snapshot` gives the request, with the first
/// condition each earlier route of its virtual host fails.
#[pyfunction]
#[pyo3(signature = (snapshot, listener, *, method, scheme, authority, target, headers))]
#[allow(clippy::too_many_arguments)] // keyword-only on the Python side
pub fn explain_route<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, PyBytes>,
    listener: &str,
    method: &str,
    scheme: &str,
    authority: &str,
    target: &str,
    headers: Vec<(String, String)>,
) -> PyResult<Bound<'py, PyDict>> {
    let snap = Snapshot::decode(snapshot.as_bytes()).map_err(|e| errors::from_proxy(e.into()))?;
    let mut map = http::HeaderMap::new();
    for (name, value) in &headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| errors::value_error(format!("not a header name: {name:?}")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| errors::value_error(format!("not a header value: {value:?}")))?;
        map.append(name, value);
    }
    let question = Question {
        method,
        scheme,
        authority: &authority.to_ascii_lowercase(),
        target,
        headers: &map,
    };
    let answer = explain(&snap, listener, &question).map_err(errors::from_explain)?;
    let out = PyDict::new(py);
    out.set_item("path", answer.path)?;
    out.set_item("virtual_host", answer.virtual_host)?;
    out.set_item("matched", answer.matched)?;
    let routes = PyList::empty(py);
    for tried in answer.routes {
        let r = PyDict::new(py);
        r.set_item("name", tried.name)?;
        r.set_item("miss", tried.miss)?;
        routes.append(r)?;
    }
    out.set_item("routes", routes)?;
    Ok(out)
}
