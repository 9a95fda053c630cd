//! `meshfast._core`: the Rust data plane as seen from Python.
//!
//! Every call that may block (building a snapshot, binding, draining) releases
//! the GIL; the data path never takes it.

mod errors;
mod explain;
mod filters;
#[cfg(feature = "cython")]
mod speedups;

use meshfast_proxy::echo::{Echo, EchoConfig};
use meshfast_proxy::Proxy;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::sync::Mutex;
use std::time::Duration;

/// The data plane: worker threads that own sockets, HTTP, routing and balancing.
#[pyclass(name = "Core", module = "meshfast._core", frozen)]
struct Core {
    proxy: Proxy,
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (*, workers = 0))]
    fn py_new(workers: usize) -> PyResult<Self> {
        // Each worker attaches to Python once and detaches for its whole life:
        // its thread state then exists already when a filter needs the GIL.
        let wrap: meshfast_proxy::ThreadWrap = std::sync::Arc::new(|body| {
            Python::attach(|py| py.detach(body));
        });
        let proxy = Proxy::start_with(workers, Some(wrap)).map_err(errors::from_proxy)?;
        Ok(Self { proxy })
    }

    #[getter]
    fn workers(&self) -> usize {
        self.proxy.workers()
    }

    fn apply_snapshot(&self, py: Python<'_>, snapshot: &Bound<'_, PyBytes>) -> PyResult<u64> {
        let bytes = snapshot.as_bytes().to_vec();
        py.detach(|| self.proxy.apply(&bytes))
            .map_err(errors::from_proxy)
    }

    /// Applies `snapshot` with `dispatcher` (None: no filters) installed in the
    /// same atomic swap; if the snapshot is refused, the current dispatcher stays.
    fn install(
        &self,
        py: Python<'_>,
        snapshot: &Bound<'_, PyBytes>,
        dispatcher: Option<Py<PyAny>>,
    ) -> PyResult<u64> {
        let bytes = snapshot.as_bytes().to_vec();
        let hook = dispatcher.map(|d| Box::new(filters::PyFilterHook::new(d)) as Box<_>);
        py.detach(|| self.proxy.install(&bytes, hook))
            .map_err(errors::from_proxy)
    }

    /// Marks `address` (`ip:port`, e.g. the admin API's) as the sidecar's own:
    /// no original destination may name it.
    fn protect(&self, address: &str) -> PyResult<()> {
        let address = address.parse().map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!("not ip:port: {address:?}"))
        })?;
        self.proxy.protect(address);
        Ok(())
    }

    /// This workload, for the labels of Istio's metrics (`reporter`,
    /// `source_*` / `destination_*`): snapshots installed from now on use it.
    #[pyo3(signature = (*, namespace, name, app, version, principal = None))]
    fn set_workload(
        &self,
        namespace: String,
        name: String,
        app: String,
        version: String,
        principal: Option<String>,
    ) {
        self.proxy
            .set_workload(meshfast_proxy::istio_metrics::Workload {
                namespace,
                name,
                app,
                version,
                principal: principal.unwrap_or_default(),
            });
    }

    /// Starts the access log: JSON lines to `path` (`-`: stdout) with
    /// `fields` (None: all of them), for snapshots installed from now on.
    #[pyo3(signature = (path, fields = None))]
    fn start_access_log(&self, path: &str, fields: Option<Vec<String>>) -> PyResult<()> {
        use meshfast_proxy::access_log::{parse_fields, AccessLogError, Field, Sink};
        let fields = match fields {
            Some(names) => parse_fields(&names),
            None => Ok(Field::ALL.to_vec()),
        }
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let sink = match path {
            "-" => Sink::Stdout,
            p => Sink::File(p.into()),
        };
        // Fields were checked above: what is left is the OS's (open, spawn).
        self.proxy
            .start_access_log(sink, fields)
            .map_err(|e: AccessLogError| pyo3::exceptions::PyOSError::new_err(e.to_string()))
    }

    /// Starts tracing, `percent` of requests sampled when their caller did
    /// not decide, for snapshots installed from now on.
    fn start_tracing(&self, percent: f64) -> PyResult<()> {
        self.proxy
            .start_tracing(percent)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    /// The spans finished since the last call: one span batch (bytes).
    fn take_spans(&self, py: Python<'_>) -> Py<PyBytes> {
        let bytes = py.detach(|| self.proxy.take_spans());
        PyBytes::new(py, &bytes).unbind()
    }

    /// The exporter's totals so far, shown in the stats.
    fn report_span_export(&self, exported: u64, failed: u64, dropped: u64) {
        self.proxy.report_span_export(exported, failed, dropped);
    }

    fn listeners(&self) -> Vec<(String, String)> {
        self.proxy.listeners()
    }

    fn stats_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.proxy.stats().render_json())
    }

    fn stats_prometheus(&self, py: Python<'_>) -> String {
        py.detach(|| self.proxy.stats().render_prometheus())
    }

    fn clusters_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.proxy.runtime().clusters_json())
    }

    #[pyo3(signature = (drain_timeout = 5.0))]
    fn shutdown(&self, py: Python<'_>, drain_timeout: f64) {
        let deadline = Duration::from_secs_f64(drain_timeout.clamp(0.0, 3600.0));
        py.detach(|| self.proxy.shutdown(deadline));
    }
}

/// The built-in upstream (`meshfast echo`), served on its own threads.
#[pyclass(name = "EchoServer", module = "meshfast._core", frozen)]
struct EchoServer {
    address: String,
    echo: Mutex<Echo>,
}

#[pymethods]
impl EchoServer {
    #[new]
    #[pyo3(signature = (listen, *, name = "echo".to_owned(), status = 200, delay_ms = 0, workers = 1))]
    fn py_new(
        py: Python<'_>,
        listen: &str,
        name: String,
        status: u16,
        delay_ms: u64,
        workers: usize,
    ) -> PyResult<Self> {
        let config = EchoConfig {
            name,
            status,
            delay_ms,
        };
        let echo = py
            .detach(|| Echo::start(listen, config, workers))
            .map_err(|e| errors::core_error(format!("echo: cannot listen on {listen}: {e}")))?;
        Ok(Self {
            address: echo.address().to_string(),
            echo: Mutex::new(echo),
        })
    }

    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    fn stop(&self, py: Python<'_>) {
        py.detach(|| {
            if let Ok(mut echo) = self.echo.lock() {
                echo.stop();
            }
        });
    }
}

/// Decodes IR bytes and encodes them again: lets tests prove that Python's and
/// Rust's IR types agree field for field.
#[pyfunction]
fn ir_roundtrip(py: Python<'_>, snapshot: &Bound<'_, PyBytes>) -> PyResult<Py<PyBytes>> {
    let snap = meshfast_proxy::ir::Snapshot::decode(snapshot.as_bytes())
        .map_err(|e| errors::from_proxy(e.into()))?;
    Ok(PyBytes::new(py, &snap.encode()).unbind())
}

/// The core's verdict on one request (or, `tcp`, one connection) under the
/// AuthorizationPolicies of an IR snapshot: `(allowed, deciding policy)`.
/// `facts` holds `principal`, `peer` (IP), `destination` (`ip:port`), `sni`,
/// `authority`, `method`, `path` and `headers` (name, value pairs), each
/// optional. Lets the oracle tests hold the Rust evaluation against
/// verdicts derived from Istio's Envoy RBAC output.
#[pyfunction]
#[pyo3(signature = (snapshot, facts, tcp = false))]
fn authz_verdict(
    snapshot: &Bound<'_, PyBytes>,
    facts: &Bound<'_, PyDict>,
    tcp: bool,
) -> PyResult<(bool, Option<String>)> {
    use meshfast_proxy::authz::{Facts, Policies, RequestFacts};
    let snap = meshfast_proxy::ir::Snapshot::decode(snapshot.as_bytes())
        .map_err(|e| errors::from_proxy(e.into()))?;
    let policies = if tcp { &snap.authz_tcp } else { &snap.authz };
    let bad = |e: String| PyValueError::new_err(e);
    let Some(built) = Policies::build(policies).map_err(|e| bad(e.to_string()))? else {
        return Ok((true, None));
    };
    let text = |key: &str| -> PyResult<Option<String>> {
        facts.get_item(key)?.map(|v| v.extract()).transpose()
    };
    let peer = text("peer")?
        .map(|p| p.parse().map_err(|_| bad(format!("bad peer IP {p:?}"))))
        .transpose()?;
    let destination = text("destination")?
        .map(|d| d.parse().map_err(|_| bad(format!("bad destination {d:?}"))))
        .transpose()?;
    let mut headers = http::HeaderMap::new();
    if let Some(list) = facts.get_item("headers")? {
        for (name, value) in list.extract::<Vec<(String, String)>>()? {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("bad header name {name:?}")))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("bad header value {value:?}")))?;
            headers.append(name, value);
        }
    }
    let (principal, sni) = (text("principal")?, text("sni")?);
    let (authority, method) = (text("authority")?.unwrap_or_default(), text("method")?);
    let path = text("path")?.unwrap_or_else(|| "/".into());
    let method = method.unwrap_or_else(|| "GET".into());
    let facts = Facts {
        principal: principal.as_deref(),
        peer,
        destination,
        sni: sni.as_deref(),
        request: (!tcp).then_some(RequestFacts {
            authority: &authority,
            method: &method,
            path: &path,
            headers: &headers,
        }),
    };
    let verdict = built.verdict(&facts);
    Ok((
        verdict.allowed,
        verdict.by.map(|i| built.policies[i].name.clone()),
    ))
}

/// Every response flag the core sets, `(name, status)` in rendering order:
/// the Python side and the docs are checked against it.
#[pyfunction]
fn response_flags() -> Vec<(&'static str, u16)> {
    meshfast_proxy::ResponseFlag::ALL
        .iter()
        .map(|f| (f.as_str(), f.status().as_u16()))
        .collect()
}

/// A span batch as the core writes it (rust/proxy/src/spans.rs), from tuples of
/// `meshfast.tracing.spans.Span`'s fields in order: the contract tests of the
/// Python decoders read what Rust wrote.
#[pyfunction]
#[pyo3(signature = (spans, max_spans = 65535, max_bytes = 1 << 24))]
fn encode_span_batch(
    py: Python<'_>,
    spans: Vec<Bound<'_, PyAny>>,
    max_spans: usize,
    max_bytes: usize,
) -> PyResult<Py<PyBytes>> {
    use meshfast_proxy::spans::{SpanBatch, SpanRecord};
    let mut batch = SpanBatch::new(max_spans, max_bytes);
    for t in spans {
        let text = |i: usize| -> PyResult<String> { t.get_item(i)?.extract() };
        let num = |i: usize| -> PyResult<u64> { t.get_item(i)?.extract() };
        let record = SpanRecord {
            trace_id: t.get_item(0)?.extract()?,
            span_id: num(1)?,
            parent_id: num(2)?,
            start_unix_ns: num(3)?,
            duration_ns: num(4)?,
            upstream_ns: num(5)?,
            bytes_in: num(6)?,
            bytes_out: num(7)?,
            status: t.get_item(8)?.extract()?,
            kind: t.get_item(9)?.extract()?,
            flags: t.get_item(10)?.extract()?,
            name: text(11)?,
            method: text(12)?,
            authority: text(13)?,
            path: text(14)?,
            cluster: text(15)?,
            upstream: text(16)?,
            request_id: text(17)?,
            response_flags: text(18)?,
            route: text(19)?,
            peer: text(20)?,
        };
        batch.push(&record);
    }
    Ok(PyBytes::new(py, &batch.finish()).unbind())
}

/// The SPIFFE ID of the first certificate in a PEM file (None: it has none).
#[pyfunction]
fn cert_identity(path: &str) -> PyResult<Option<String>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| errors::core_error(format!("cannot read {path:?}: {e}")))?
        .next()
        .transpose()
        .map_err(|e| errors::core_error(format!("cannot read {path:?}: {e}")))?;
    Ok(first.as_ref().and_then(meshfast_proxy::spiffe::identity))
}

/// Hands the C heap's free pages back to the system (glibc's `malloc_trim`).
/// Start-up (imports, a config compile) frees far more than it keeps, and glibc
/// keeps freed pages mapped: the sidecar calls this once it is ready and after
/// each reload. Returns whether anything was released; False off glibc.
#[pyfunction]
fn trim_memory(py: Python<'_>) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only walks the allocator's own arenas, under their locks.
        py.detach(|| unsafe { malloc_trim(0) } == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = py;
        false
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<EchoServer>()?;
    m.add_class::<filters::Completion>()?;
    m.add_function(wrap_pyfunction!(ir_roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(authz_verdict, m)?)?;
    m.add_function(wrap_pyfunction!(response_flags, m)?)?;
    m.add_function(wrap_pyfunction!(cert_identity, m)?)?;
    m.add_function(wrap_pyfunction!(encode_span_batch, m)?)?;
    m.add_function(wrap_pyfunction!(trim_memory, m)?)?;
    m.add_function(wrap_pyfunction!(explain::explain_route, m)?)?;
    errors::register(m)?;
    #[cfg(feature = "cython")]
    speedups::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
