//! The hook for Python filters. The data path knows only this trait; the
//! PyO3 crate implements it by calling the control layer's dispatcher with the
//! GIL held, on the worker's thread. Routes without filters never reach it.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::any::Any;

/// What a filter is told about the request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authority: String,
    pub scheme: String,
    pub peer: String,
    pub route: String,
    pub cluster: String,
}

/// Whatever the filters keep per request between phases (Python's `state`).
pub type FilterState = Option<Box<dyn Any + Send + Sync>>;

pub enum FilterAction {
    /// Go on to the upstream (the headers may have been changed in place).
    Continue(FilterState),
    /// Answer locally.
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// A filter raised (or broke the protocol); the route's failure status answers.
#[derive(Debug, thiserror::Error)]
#[error("filter failed: {0}")]
pub struct FilterError(pub String);

pub trait FilterHook: Send + Sync {
    fn on_request(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        headers: &mut HeaderMap,
    ) -> Result<FilterAction, FilterError>;

    fn on_response(
        &self,
        filters: &[u32],
        info: &RequestInfo,
        status: StatusCode,
        headers: &mut HeaderMap,
        state: FilterState,
    ) -> Result<(), FilterError>;
}
