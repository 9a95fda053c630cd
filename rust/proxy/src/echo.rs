//! `meshfast echo`: a fast upstream for tests, demos and benchmarks.
//!
//! Replies with JSON `{name, method, path, authority, protocol, headers,
//! body_bytes}` after reading (and discarding) the request body; request
//! trailers come back as response trailers. Control headers:
//! `x-echo-status` (reply status), `x-echo-delay-ms` (wait first) and
//! `x-echo-body-bytes` (stream that many bytes instead of JSON).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EchoConfig {
    pub name: String,
    pub status: u16,
    pub delay_ms: u64,
}

/// A running echo server; stops when [`Echo::stop`] is called or it is dropped.
pub struct Echo {
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo")
            .field("address", &self.address)
            .finish()
    }
}

impl Echo {
    pub fn start(listen: &str, config: EchoConfig, workers: usize) -> std::io::Result<Self> {
        let address = crate::listener::resolve(listen)?;
        let mut sockets = crate::listener::bind(address, 1)?;
        let socket = sockets.remove(0);
        let address = socket.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("meshfast-echo")
            .enable_all()
            .build()?;
        let config = Arc::new(config);
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(socket) else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(1000);
            let builder = Arc::new(builder);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let config = config.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, config.clone()));
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            runtime: Some(runtime),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// What the echo reports of a request's head: method, path (with query),
/// authority, protocol and headers (repeated ones joined with `, `).
fn describe<B>(req: &Request<B>) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), v.into());
            }
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "authority": authority,
        "protocol": format!("{:?}", req.version()),
        "headers": headers,
    })
}

async fn handle(
    req: Request<Incoming>,
    config: Arc<EchoConfig>,
) -> Result<Response<EchoBody>, Infallible> {
    let h = req.headers();
    let status = header_u64(h, "x-echo-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .or_else(|| StatusCode::from_u16(config.status).ok())
        .unwrap_or(StatusCode::OK);
    let delay = header_u64(h, "x-echo-delay-ms").unwrap_or(config.delay_ms);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    if let Some(n) = header_u64(h, "x-echo-body-bytes") {
        let mut resp = Response::new(EchoBody::Chunks { remaining: n });
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert("x-echo-name", header_value(&config.name));
        // Drain the request body in the background so the connection stays usable.
        let (_, mut body) = req.into_parts();
        tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
        return Ok(resp);
    }

    let described = describe(&req);
    // Read the body frame by frame: count it, keep only its trailers.
    let (_, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(data) => body_bytes += data.len() as u64,
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let mut json = described;
    json["name"] = config.name.as_str().into();
    json["body_bytes"] = body_bytes.into();
    let mut resp = Response::new(EchoBody::Json {
        data: Some(Bytes::from(json.to_string())),
        trailers,
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-echo-name", header_value(&config.name));
    Ok(resp)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("echo"))
}

static ZEROS: [u8; 64 << 10] = [b'x'; 64 << 10];

pub enum EchoBody {
    Chunks {
        remaining: u64,
    },
    Json {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(match self.get_mut() {
            EchoBody::Chunks { remaining } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(ZEROS.len() as u64) as usize;
                    *remaining -= n as u64;
                    Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n]))))
                }
            }
            EchoBody::Json { data, trailers } => match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            },
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EchoBody::Chunks { remaining } => *remaining == 0,
            EchoBody::Json { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EchoBody::Chunks { remaining } => SizeHint::with_exact(*remaining),
            // With trailers the length is left open so HTTP/1.1 uses chunked encoding.
            EchoBody::Json {
                data,
                trailers: None,
            } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            EchoBody::Json { .. } => SizeHint::default(),
        }
    }
}
