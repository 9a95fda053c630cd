//! The hook for Python filters. The data path knows only this trait; the
//! PyO3 crate implements it by calling the control layer's dispatcher with the
//! GIL held, on the worker's thread. Routes without filters never reach it.
//!
//! A phase answers now ([`Verdict::Now`]) or later ([`Verdict::Later`]): an
//! `async def` phase runs on the control layer's Trio loop and sends its
//! result through a oneshot channel, so the worker serves other requests
//! meanwhile. The worker waits at most the route's filter budget for it.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::any::Any;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a filter is told about the request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authority: String,
    pub scheme: String,
    pub peer: String,
    /// The client's SPIFFE ID over mesh mTLS; empty otherwise.
    pub identity: String,
    pub route: String,
    pub cluster: String,
}

/// Whatever the filters keep per request between phases (Python's `state`).
pub type FilterState = Option<Box<dyn Any + Send + Sync>>;

/// What the request phase decided.
pub enum FilterAction {
    /// Go on to the upstream; `None` leaves the headers (or the buffered body) as they were.
    Continue {
        headers: Option<HeaderMap>,
        body: Option<Bytes>,
        state: FilterState,
    },
    /// Answer locally.
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// What the response phase changed; `None`: unchanged.
#[derive(Default)]
pub struct ResponseEdit {
    pub headers: Option<HeaderMap>,
    pub body: Option<Bytes>,
}

/// A filter failed: it raised, overran its time budget, or broke the protocol.
/// `status` is the failing filter's `failureStatus` when the control layer knows it.
#[derive(Debug, thiserror::Error)]
#[error("filter failed: {message}")]
pub struct FilterError {
    pub message: String,
    pub status: Option<StatusCode>,
    pub timeout: bool,
}

impl FilterError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: None,
            timeout: false,
        }
    }
}

pub type FilterResult<T> = Result<T, FilterError>;

/// A phase's outcome: here already, or coming from the Trio loop.
pub enum Verdict<T> {
    Now(FilterResult<T>),
    Later(oneshot::Receiver<FilterResult<T>>),
}

impl<T> Verdict<T> {
    /// The outcome, waiting at most `budget` for one that comes later.
    pub async fn wait(self, budget: Duration) -> FilterResult<T> {
        match self {
            Self::Now(r) => r,
            Self::Later(rx) => match tokio::time::timeout(budget, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(FilterError::new(
                    "the filter's task ended without an answer",
                )),
                Err(_) => Err(FilterError {
                    message: "no answer within the filter budget".into(),
                    status: None,
                    timeout: true,
                }),
            },
        }
    }
}

/// How a request ended when no response phase ran: a local reply of the core
/// (no healthy upstream, connect failure, timeout...) after the request phase
/// let it through.
pub struct Ending<'a> {
    pub status: StatusCode,
    pub flags: &'a str,
}

pub trait FilterHook: Send + Sync {
    /// The request phase; `body` is the buffered request body when the route's
    /// filters asked for it.
    fn on_request(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        headers: &HeaderMap,
        body: Option<&Bytes>,
    ) -> Verdict<FilterAction>;

    /// The response phase of the filters whose request phase ran.
    fn on_response(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        state: FilterState,
    ) -> Verdict<ResponseEdit>;

    /// The log phase alone, for requests the core answered itself after the
    /// request phase (the response phase, when it runs, ends with the log phase).
    fn on_log(&self, filters: &[u32], info: &RequestInfo, ending: Ending<'_>, state: FilterState);
}
