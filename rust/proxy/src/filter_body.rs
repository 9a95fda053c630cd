//! Bodies read whole for the Python filters that asked for them, never past
//! the largest limit the route's filters declared.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The body (or its declared length) is over the limit.
    TooLarge,
    /// The peer broke off or sent a malformed body.
    Broken,
}

/// The data and trailers of `body`, if they fit in `limit` bytes.
/// A `Content-Length` over the limit fails before anything is read.
pub async fn read_whole<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<(Bytes, Option<HeaderMap>), ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            Ok((collected.to_bytes(), trailers))
        }
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Broken),
    }
}

/// A body a filter replaced goes on with its own length.
pub fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn reads_up_to_the_limit_and_no_further() {
        let h = HeaderMap::new();
        let ok = run(read_whole(&h, Full::new(Bytes::from_static(b"12345")), 5));
        assert_eq!(ok, Ok((Bytes::from_static(b"12345"), None)));
        let over = run(read_whole(&h, Full::new(Bytes::from_static(b"123456")), 5));
        assert_eq!(over, Err(ReadError::TooLarge));
    }

    #[test]
    fn a_declared_length_over_the_limit_fails_first() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(10));
        let r = run(read_whole(&h, Full::new(Bytes::from_static(b"1")), 5));
        assert_eq!(r, Err(ReadError::TooLarge));
    }
}
