//! The filter hook: the core's workers call the control layer's dispatcher
//! (`meshfast.filters.dispatch.Dispatcher`) with the GIL held, on their own
//! thread, only for routes that list filters. The tuple protocol is documented
//! in `_core.pyi` (`FilterDispatcher`); this file is the one place where those
//! tuples become Rust values.
//!
//! An `("async", runner)` answer means the phase continues on the Trio loop:
//! we hand `runner` a [`Completion`] and the worker awaits its channel, so it
//! goes on serving other requests without holding the GIL.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use meshfast_proxy::filters::{
    Ending, FilterAction, FilterError, FilterHook, FilterResult, FilterState, RequestInfo,
    ResponseEdit, Verdict,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::sync::Mutex;
use tokio::sync::oneshot;

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

fn to_map(list: HeaderList) -> FilterResult<HeaderMap> {
    let mut map = HeaderMap::with_capacity(list.len());
    for (k, v) in list {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| FilterError::new(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|_| FilterError::new(format!("invalid value for header {k:?}")))?;
        map.append(name, value);
    }
    Ok(map)
}

type InfoTuple<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

fn info_tuple(info: &RequestInfo) -> InfoTuple<'_> {
    (
        &info.method,
        &info.path,
        &info.query,
        &info.authority,
        &info.scheme,
        &info.peer,
        &info.route,
        &info.cluster,
        &info.identity,
    )
}

fn py_err(e: PyErr) -> FilterError {
    FilterError::new(e.to_string())
}

fn body_arg<'py>(py: Python<'py>, body: Option<&Bytes>) -> Option<Bound<'py, PyBytes>> {
    body.map(|b| PyBytes::new(py, b))
}

fn status_of(code: u16) -> FilterResult<StatusCode> {
    StatusCode::from_u16(code).map_err(|_| FilterError::new(format!("invalid status {code}")))
}

fn item<'py>(t: &Bound<'py, PyAny>, i: usize) -> FilterResult<Bound<'py, PyAny>> {
    t.get_item(i).map_err(py_err)
}

fn optional_headers(v: Bound<'_, PyAny>) -> FilterResult<Option<HeaderMap>> {
    if v.is_none() {
        return Ok(None);
    }
    to_map(v.extract().map_err(py_err)?).map(Some)
}

fn optional_body(v: Bound<'_, PyAny>) -> FilterResult<Option<Bytes>> {
    if v.is_none() {
        return Ok(None);
    }
    v.cast::<PyBytes>()
        .map(|b| Some(Bytes::copy_from_slice(b.as_bytes())))
        .map_err(|_| FilterError::new("a body must be bytes"))
}

/// `("error", status, message, timeout)`: the dispatcher already counted it.
fn error_of(t: &Bound<'_, PyAny>) -> FilterError {
    let parsed = || -> PyResult<FilterError> {
        let status: Option<u16> = t.get_item(1)?.extract()?;
        Ok(FilterError {
            message: t.get_item(2)?.extract()?,
            status: status.and_then(|s| StatusCode::from_u16(s).ok()),
            timeout: t.get_item(3)?.extract()?,
        })
    };
    parsed().unwrap_or_else(py_err)
}

fn tag(t: &Bound<'_, PyAny>) -> FilterResult<String> {
    item(t, 0)?.extract().map_err(py_err)
}

fn request_action(t: &Bound<'_, PyAny>) -> FilterResult<FilterAction> {
    if t.is_none() {
        return Ok(FilterAction::Continue {
            headers: None,
            body: None,
            state: None,
        });
    }
    match tag(t)?.as_str() {
        "continue" => Ok(FilterAction::Continue {
            headers: optional_headers(item(t, 1)?)?,
            body: optional_body(item(t, 2)?)?,
            state: Some(Box::new(item(t, 3)?.unbind())),
        }),
        "respond" => Ok(FilterAction::Respond {
            status: status_of(item(t, 1)?.extract().map_err(py_err)?)?,
            headers: to_map(item(t, 2)?.extract().map_err(py_err)?)?,
            body: optional_body(item(t, 3)?)?.unwrap_or_default(),
        }),
        "error" => Err(error_of(t)),
        other => Err(FilterError::new(format!("unknown filter action {other:?}"))),
    }
}

fn response_edit(t: &Bound<'_, PyAny>) -> FilterResult<ResponseEdit> {
    if t.is_none() {
        return Ok(ResponseEdit::default());
    }
    match tag(t)?.as_str() {
        "continue" => Ok(ResponseEdit {
            headers: optional_headers(item(t, 1)?)?,
            body: optional_body(item(t, 2)?)?,
        }),
        "error" => Err(error_of(t)),
        other => Err(FilterError::new(format!("unknown filter action {other:?}"))),
    }
}

enum Sender {
    Request(oneshot::Sender<FilterResult<FilterAction>>),
    Response(oneshot::Sender<FilterResult<ResponseEdit>>),
}

/// Where an `async` phase's answer goes: the control layer calls `set` once,
/// from the Trio thread, with the tuple the sync phase would have returned.
#[pyclass(module = "meshfast._core", frozen)]
pub struct Completion {
    tx: Mutex<Option<Sender>>,
}

#[pymethods]
impl Completion {
    /// Delivers the phase's answer; returns False when nobody waits any more
    /// (the request ended, or it was answered already).
    fn set(&self, result: Bound<'_, PyAny>) -> bool {
        let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) else {
            return false;
        };
        match tx {
            Sender::Request(tx) => tx.send(request_action(&result)).is_ok(),
            Sender::Response(tx) => tx.send(response_edit(&result)).is_ok(),
        }
    }
}

/// Hands `runner` (from `("async", runner)`) a completion; the verdict waits on it.
fn later<T>(
    runner: Bound<'_, PyAny>,
    wrap: impl FnOnce(oneshot::Sender<FilterResult<T>>) -> Sender,
) -> Verdict<T> {
    let (tx, rx) = oneshot::channel();
    let completion = Completion {
        tx: Mutex::new(Some(wrap(tx))),
    };
    match runner.call1((completion,)) {
        Ok(_) => Verdict::Later(rx),
        Err(e) => Verdict::Now(Err(py_err(e))),
    }
}

/// What a phase's call answered: now, or (`("async", runner)`) later through a
/// completion handed to `runner`.
fn verdict<T>(
    called: FilterResult<Bound<'_, PyAny>>,
    wrap: impl FnOnce(oneshot::Sender<FilterResult<T>>) -> Sender,
    parse: impl FnOnce(&Bound<'_, PyAny>) -> FilterResult<T>,
) -> Verdict<T> {
    let result = match called {
        Ok(r) => r,
        Err(e) => return Verdict::Now(Err(e)),
    };
    if !result.is_none() && tag(&result).is_ok_and(|t| t == "async") {
        return match item(&result, 1) {
            Ok(runner) => later(runner, wrap),
            Err(e) => Verdict::Now(Err(e)),
        };
    }
    Verdict::Now(parse(&result))
}

/// The dispatcher's per-request state back as the Python object it gave (None if absent).
fn state_object(py: Python<'_>, state: FilterState) -> Py<PyAny> {
    state
        .and_then(|s| s.downcast::<Py<PyAny>>().ok())
        .map_or_else(|| py.None(), |s| *s)
}

impl FilterHook for PyFilterHook {
    fn on_request(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        headers: &HeaderMap,
        body: Option<&Bytes>,
    ) -> Verdict<FilterAction> {
        Python::attach(|py| {
            let call = || -> FilterResult<Bound<'_, PyAny>> {
                let ids = PyTuple::new(py, filters).map_err(py_err)?;
                let args = (ids, info_tuple(info), to_list(headers), body_arg(py, body));
                self.dispatcher
                    .bind(py)
                    .call_method1("on_request", args)
                    .map_err(py_err)
            };
            verdict(call(), Sender::Request, request_action)
        })
    }

    fn on_response(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        state: FilterState,
    ) -> Verdict<ResponseEdit> {
        Python::attach(|py| {
            let state = state_object(py, state);
            let call = || -> FilterResult<Bound<'_, PyAny>> {
                let ids = PyTuple::new(py, filters).map_err(py_err)?;
                let args = (
                    ids,
                    info_tuple(info),
                    status.as_u16(),
                    to_list(headers),
                    body_arg(py, body),
                    state,
                );
                self.dispatcher
                    .bind(py)
                    .call_method1("on_response", args)
                    .map_err(py_err)
            };
            verdict(call(), Sender::Response, response_edit)
        })
    }

    fn on_log(&self, filters: &[u32], info: &RequestInfo, ending: Ending<'_>, state: FilterState) {
        Python::attach(|py| {
            let state = state_object(py, state);
            let Ok(ids) = PyTuple::new(py, filters) else {
                return;
            };
            let args = (
                ids,
                info_tuple(info),
                ending.status.as_u16(),
                ending.flags,
                state,
            );
            // The dispatcher counts what the filters raise; a failure of the
            // dispatcher itself cannot change a reply that is already decided.
            if let Err(e) = self.dispatcher.bind(py).call_method1("on_log", args) {
                e.print(py);
            }
        })
    }
}
