//! The upstream request: the downstream request rewritten (path, authority,
//! header operations, hop-by-hop headers dropped), kept so that each try —
//! and each mirror — can build its own copy, with the body streamed once,
//! teed for replay, or replayed from memory.

use crate::body::{BodyEnd, Direction, DownBody, Metered, Recording, RequestBody};
use crate::cluster::ClusterRt;
use crate::flags::ResponseFlag;
use crate::headers::strip_hop_by_hop;
use crate::pool::UpstreamBody;
use crate::runtime::{Destination, RouteRt};
use crate::stats::Counters;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use meshfast_ir::UpstreamProtocol;
use std::sync::Arc;

/// Request bodies up to this size are buffered when a retry or mirror may
/// need to send them again (Envoy buffers for the same reason).
const REPLAY_LIMIT: u64 = 64 << 10;

/// Where the upstream request goes and how: the parts of the context that
/// shape it.
pub struct Shape<'a> {
    pub route: &'a RouteRt,
    pub dest: &'a Destination,
    pub cluster: &'a ClusterRt,
    pub authority: &'a str,
    pub sinks: [Option<Arc<Counters>>; 3],
}

/// The upstream request for `req`: rewritten, with its body ready to be sent
/// (and sent again when retries or mirrors need it).
pub async fn prepare(
    shape: Shape<'_>,
    req: Request<DownBody>,
) -> Result<UpstreamRequest, ResponseFlag> {
    let Shape {
        route,
        dest,
        cluster,
        authority,
        sinks,
    } = shape;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let original_pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Borrowed unless a rewrite changes it: no copy per request.
    let mut authority = std::borrow::Cow::Borrowed(authority);
    if let Some(rw) = &route.rewrite {
        if let Some(path) = rw.path(original_pq, &route.matched) {
            parts.uri = Uri::try_from(path).map_err(|_| ResponseFlag::DownstreamProtocolError)?;
        }
        if let Some(a) = &rw.authority {
            authority = std::borrow::Cow::Owned(a.to_str().unwrap_or_default().to_owned());
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // Host carries the authority; header operations may still change it.
    if let Ok(host) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, host);
    }
    route.request_headers.apply(&mut parts.headers);
    dest.request_headers.apply(&mut parts.headers);

    let retries = route.retry.as_ref().is_some_and(|r| r.attempts > 0);
    let body = match body {
        DownBody::Buffered { data, trailers } => BodySource::Replay {
            frames: if data.is_empty() {
                Vec::new()
            } else {
                vec![data]
            },
            trailers,
        },
        DownBody::Streaming(body) => body_source(body, !route.mirrors.is_empty(), retries).await?,
    };
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // An idempotent HTTP/1.1 request with its body in hand is kept too: sent on
    // a pooled connection the upstream was closing, it goes again (the
    // keep-alive race; forward.rs).
    let keep = !route.mirrors.is_empty()
        || route
            .retry
            .as_ref()
            .is_some_and(|r| r.attempts > 0 && r.retries_after_sending(grpc))
        || (cluster.protocol != UpstreamProtocol::Http2
            && idempotent(&parts.method)
            && matches!(body, BodySource::Replay { .. }));
    // Only TLS origination (auto SNI) and mirrors need the host after the headers are taken.
    let host = (cluster.tls.is_some() || !route.mirrors.is_empty())
        .then(|| {
            parts
                .headers
                .get(header::HOST)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten();
    Ok(UpstreamRequest {
        host,
        method: parts.method,
        path,
        headers: parts.headers,
        keep,
        spent: false,
        body,
        http2: cluster.protocol == UpstreamProtocol::Http2,
        sinks,
    })
}

/// How a streaming request body goes upstream: read first when small and
/// mirrors need it, teed when retries may need it, else streamed once.
async fn body_source(
    body: Incoming,
    mirrors: bool,
    retries: bool,
) -> Result<BodySource, ResponseFlag> {
    Ok(if body.is_end_stream() {
        BodySource::Replay {
            frames: Vec::new(),
            trailers: None,
        }
    } else if mirrors && body.size_hint().exact().is_some_and(|n| n <= REPLAY_LIMIT) {
        // Mirrors need the body before the primary is sent: read small ones first.
        let collected =
            Box::pin(http_body_util::Limited::new(body, REPLAY_LIMIT as usize).collect())
                .await
                .map_err(|_| ResponseFlag::DownstreamProtocolError)?;
        let trailers = collected.trailers().cloned();
        BodySource::Replay {
            frames: vec![collected.to_bytes()],
            trailers,
        }
    } else if retries {
        // Stream through while keeping a copy, as Envoy's retry buffer does.
        BodySource::Teed {
            first: Some(body),
            record: Arc::default(),
            end: BodyEnd::default(),
        }
    } else {
        BodySource::Streaming(Some(body), BodyEnd::default())
    })
}

/// Everything needed to build the upstream request again for another try.
pub struct UpstreamRequest {
    host: Option<String>,
    method: Method,
    path: http::uri::PathAndQuery,
    pub headers: HeaderMap,
    /// Whether later tries may need the request again. When not, the first
    /// try takes the headers instead of copying them.
    keep: bool,
    /// The headers were handed to a try; nothing more can be built.
    spent: bool,
    body: BodySource,
    http2: bool,
    sinks: [Option<Arc<Counters>>; 3],
}

enum BodySource {
    /// Sent once; None after that. Its end is signalled as it streams.
    Streaming(Option<Incoming>, BodyEnd),
    /// Sent once while recording a copy that later tries may replay.
    Teed {
        first: Option<Incoming>,
        record: Arc<parking_lot::Mutex<Recording>>,
        end: BodyEnd,
    },
    /// Known in full: every try sends the same.
    Replay {
        frames: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

/// RFC 9110 §9.2.2: a request that may be sent again after a connection
/// failure (the client cannot tell whether the server processed it).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl UpstreamRequest {
    /// Whether the request may go again after its connection failed under it
    /// before any response (idempotent, and another request can be built).
    pub fn resendable(&self) -> bool {
        idempotent(&self.method) && self.replayable()
    }

    /// Whether another request can still be built.
    pub fn replayable(&self) -> bool {
        if self.spent {
            return false;
        }
        match &self.body {
            BodySource::Streaming(first, _) => first.is_some(),
            BodySource::Teed { first, record, .. } => first.is_some() || record.lock().replayable(),
            BodySource::Replay { .. } => true,
        }
    }

    pub fn http2(&self) -> bool {
        self.http2
    }

    /// The end of a body still streaming from the client; None when the
    /// whole body is already here.
    pub fn body_end(&self) -> Option<&BodyEnd> {
        match &self.body {
            BodySource::Streaming(_, end) | BodySource::Teed { end, .. } => Some(end),
            BodySource::Replay { .. } => None,
        }
    }

    /// The request body's bytes from the client, for the access log.
    pub fn received(&self) -> crate::access_log::Received {
        use crate::access_log::Received;
        match &self.body {
            BodySource::Streaming(_, end) | BodySource::Teed { end, .. } => {
                Received::Streaming(end.clone())
            }
            BodySource::Replay { frames, .. } => {
                Received::Known(frames.iter().map(|f| f.len() as u64).sum())
            }
        }
    }

    /// The authority the upstream will see (Host before any try took it).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// A fresh request, or None when the streamed body was already used.
    pub fn build(&mut self) -> Option<Request<UpstreamBody>> {
        if self.spent {
            return None;
        }
        let body = match &mut self.body {
            BodySource::Streaming(b, end) => RequestBody::Streaming {
                inner: b.take()?,
                end: end.clone(),
            },
            BodySource::Teed { first, record, end } => match first.take() {
                Some(inner) => RequestBody::Teed {
                    inner,
                    record: record.clone(),
                    limit: REPLAY_LIMIT,
                    end: end.clone(),
                },
                None => {
                    let r = record.lock();
                    if !r.replayable() {
                        return None;
                    }
                    RequestBody::Replay {
                        frames: r.frames.iter().cloned().collect(),
                        trailers: r.trailers.clone(),
                    }
                }
            },
            BodySource::Replay { frames, trailers } => RequestBody::Replay {
                frames: frames.iter().cloned().collect(),
                trailers: trailers.clone(),
            },
        };
        let headers = if self.keep {
            self.headers.clone()
        } else {
            self.spent = true;
            std::mem::take(&mut self.headers)
        };
        self.request_with(headers, body, self.sinks.clone(), self.http2)
    }

    /// A copy for a mirror, with its own counters, in its cluster's protocol;
    /// None for streamed bodies.
    pub fn mirror_copy(
        &self,
        sinks: [Option<Arc<Counters>>; 3],
        http2: bool,
    ) -> Option<Request<UpstreamBody>> {
        let BodySource::Replay { frames, trailers } = &self.body else {
            return None;
        };
        let body = RequestBody::Replay {
            frames: frames.iter().cloned().collect(),
            trailers: trailers.clone(),
        };
        self.request_with(self.headers.clone(), body, sinks, http2)
    }

    fn request_with(
        &self,
        mut headers: HeaderMap,
        body: RequestBody,
        sinks: [Option<Arc<Counters>>; 3],
        http2: bool,
    ) -> Option<Request<UpstreamBody>> {
        let uri = if http2 {
            // HTTP/2 carries the authority in :authority, not Host.
            let authority = headers
                .remove(header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = authority;
            parts.path_and_query = Some(self.path.clone());
            Uri::from_parts(parts).ok()?
        } else {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(self.path.clone());
            Uri::from_parts(parts).ok()?
        };
        let mut req = Request::new(Box::new(Metered::new(body, Direction::In, sinks)));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        Some(req)
    }
}
