//! The only place Rust errors become Python exceptions.

use meshfast_proxy::ProxyError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _core,
    SnapshotError,
    PyException,
    "The IR could not be decoded or built; the old snapshot stays."
);
create_exception!(
    _core,
    CoreError,
    PyException,
    "The core could not do what was asked (a listener failed to bind, ...)."
);

pub fn from_proxy(e: ProxyError) -> PyErr {
    match e {
        ProxyError::Decode(_) | ProxyError::Build(_) => SnapshotError::new_err(e.to_string()),
        ProxyError::Bind { .. } | ProxyError::WorkerGone(_) | ProxyError::Spawn(_) => {
            CoreError::new_err(e.to_string())
        }
    }
}

pub fn core_error(message: String) -> PyErr {
    CoreError::new_err(message)
}

pub fn value_error(message: String) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(message)
}

/// A question `explain` cannot answer: a listener that is not there or does
/// not route HTTP (ValueError), or a route table that does not build.
pub fn from_explain(e: meshfast_proxy::explain::ExplainError) -> PyErr {
    use meshfast_proxy::explain::ExplainError;
    match e {
        ExplainError::NoListener(_) | ExplainError::NotHttp(_) => value_error(e.to_string()),
        ExplainError::Build(_) => SnapshotError::new_err(e.to_string()),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SnapshotError", py.get_type::<SnapshotError>())?;
    m.add("CoreError", py.get_type::<CoreError>())?;
    Ok(())
}
