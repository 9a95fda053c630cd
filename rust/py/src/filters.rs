//! The filter hook: the core's workers call the control layer's dispatcher
//! (`meshfast.filters.dispatch.Dispatcher`) with the GIL held, on their own
//! thread, only for routes that list filters. The tuple protocol is documented
//! in `_core.pyi` (`FilterDispatcher`).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use meshfast_proxy::filters::{FilterAction, FilterError, FilterHook, FilterState, RequestInfo};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

pub struct PyFilterHook {
    dispatcher: Py<PyAny>,
}

impl PyFilterHook {
    pub fn new(dispatcher: Py<PyAny>) -> Self {
        Self { dispatcher }
    }
}

type HeaderList = Vec<(String, String)>;

fn to_list(headers: &HeaderMap) -> HeaderList {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn to_map(list: HeaderList) -> Result<HeaderMap, FilterError> {
    let mut map = HeaderMap::with_capacity(list.len());
    for (k, v) in list {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| FilterError(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|_| FilterError(format!("invalid value for header {k:?}")))?;
        map.append(name, value);
    }
    Ok(map)
}

fn info_tuple(info: &RequestInfo) -> (&str, &str, &str, &str, &str, &str, &str, &str) {
    (
        &info.method,
        &info.path,
        &info.query,
        &info.authority,
        &info.scheme,
        &info.peer,
        &info.route,
        &info.cluster,
    )
}

fn py_err(e: PyErr) -> FilterError {
    FilterError(e.to_string())
}

impl FilterHook for PyFilterHook {
    fn on_request(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        headers: &mut HeaderMap,
    ) -> Result<FilterAction, FilterError> {
        Python::attach(|py| {
            let ids = PyTuple::new(py, filters).map_err(py_err)?;
            let result = self
                .dispatcher
                .bind(py)
                .call_method1("on_request", (ids, info_tuple(info), to_list(headers)))
                .map_err(py_err)?;
            if result.is_none() {
                return Ok(FilterAction::Continue(None));
            }
            let tag: String = result
                .get_item(0)
                .and_then(|t| t.extract())
                .map_err(py_err)?;
            match tag.as_str() {
                "continue" => {
                    let list: HeaderList = result
                        .get_item(1)
                        .and_then(|h| h.extract())
                        .map_err(py_err)?;
                    *headers = to_map(list)?;
                    let state = result.get_item(2).map_err(py_err)?.unbind();
                    Ok(FilterAction::Continue(Some(Box::new(state))))
                }
                "respond" => {
                    let status: u16 = result
                        .get_item(1)
                        .and_then(|s| s.extract())
                        .map_err(py_err)?;
                    let list: HeaderList = result
                        .get_item(2)
                        .and_then(|h| h.extract())
                        .map_err(py_err)?;
                    let body = result.get_item(3).map_err(py_err)?;
                    let body = body
                        .cast::<PyBytes>()
                        .map(|b| Bytes::copy_from_slice(b.as_bytes()))
                        .map_err(|_| FilterError("a local reply's body must be bytes".into()))?;
                    Ok(FilterAction::Respond {
                        status: StatusCode::from_u16(status)
                            .map_err(|_| FilterError(format!("invalid status {status}")))?,
                        headers: to_map(list)?,
                        body,
                    })
                }
                other => Err(FilterError(format!("unknown filter action {other:?}"))),
            }
        })
    }

    fn on_response(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        status: StatusCode,
        headers: &mut HeaderMap,
        state: FilterState,
    ) -> Result<(), FilterError> {
        Python::attach(|py| {
            let state = state
                .and_then(|s| s.downcast::<Py<PyAny>>().ok())
                .map_or_else(|| py.None(), |s| *s);
            let ids = PyTuple::new(py, filters).map_err(py_err)?;
            let result = self
                .dispatcher
                .bind(py)
                .call_method1(
                    "on_response",
                    (
                        ids,
                        info_tuple(info),
                        status.as_u16(),
                        to_list(headers),
                        state,
                    ),
                )
                .map_err(py_err)?;
            if !result.is_none() {
                let list: HeaderList = result.extract().map_err(py_err)?;
                *headers = to_map(list)?;
            }
            Ok(())
        })
    }
}
