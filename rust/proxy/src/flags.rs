//! Envoy's `%RESPONSE_FLAGS%`: why a reply did not come from the upstream.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// No route matched (404).
    NoRoute,
    /// The route's cluster does not exist (503).
    NoCluster,
    /// The cluster has no endpoint to send to (503).
    NoHealthyUpstream,
    /// Connecting to the upstream failed (503).
    UpstreamConnectFailure,
    /// The upstream connection ended before a response arrived (503).
    UpstreamConnectionTermination,
    /// The route timeout fired (504).
    UpstreamRequestTimeout,
    /// The request itself was unusable (400).
    DownstreamProtocolError,
    /// The client went away before its request was sent on (499, nginx's
    /// "client closed request": nobody reads it; it keeps such requests apart
    /// in the counters).
    DownstreamConnectionTermination,
    /// Fault injection aborted the request.
    FaultInjected,
    /// Fault injection delayed the request.
    DelayInjected,
    /// Retries ran out; the last try's answer was passed on.
    RetryLimitExceeded,
    /// A Python filter raised.
    FilterFailure,
    /// The client sent no byte of its request body for the stream idle
    /// timeout (408).
    StreamIdleTimeout,
    /// The upstream's response could not be passed on faithfully (both
    /// Content-Length and Transfer-Encoding: a smuggling attempt) (503).
    UpstreamProtocolError,
    /// A connection-pool limit (circuit breaker) was reached (503); on a
    /// passed-on answer: a retry was not made past `maxRetries`.
    UpstreamOverflow,
    /// An AuthorizationPolicy denied the request (403).
    RbacDenied,
}

// === impl ResponseFlag ===

impl ResponseFlag {
    pub const ALL: [ResponseFlag; 16] = [
        Self::NoRoute,
        Self::NoCluster,
        Self::NoHealthyUpstream,
        Self::UpstreamConnectFailure,
        Self::UpstreamConnectionTermination,
        Self::UpstreamRequestTimeout,
        Self::DownstreamProtocolError,
        Self::DownstreamConnectionTermination,
        Self::FaultInjected,
        Self::DelayInjected,
        Self::RetryLimitExceeded,
        Self::FilterFailure,
        Self::StreamIdleTimeout,
        Self::UpstreamProtocolError,
        Self::UpstreamOverflow,
        Self::RbacDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoCluster => "NC",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamConnectionTermination => "UC",
            Self::UpstreamRequestTimeout => "UT",
            Self::DownstreamProtocolError => "DPE",
            Self::DownstreamConnectionTermination => "DC",
            Self::FaultInjected => "FI",
            Self::DelayInjected => "DI",
            Self::RetryLimitExceeded => "URX",
            Self::FilterFailure => "FF",
            Self::StreamIdleTimeout => "SI",
            Self::UpstreamProtocolError => "UPE",
            Self::UpstreamOverflow => "UO",
            Self::RbacDenied => "RBAC",
        }
    }

    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::NoRoute => S::NOT_FOUND,
            Self::RbacDenied => S::FORBIDDEN,
            Self::StreamIdleTimeout => S::REQUEST_TIMEOUT,
            Self::UpstreamRequestTimeout => S::GATEWAY_TIMEOUT,
            Self::DownstreamProtocolError => S::BAD_REQUEST,
            Self::DownstreamConnectionTermination => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
            // Fault aborts carry their configured status; these are only defaults.
            Self::FaultInjected | Self::DelayInjected => S::INTERNAL_SERVER_ERROR,
            Self::RetryLimitExceeded => S::SERVICE_UNAVAILABLE,
            Self::FilterFailure => S::INTERNAL_SERVER_ERROR,
            Self::NoCluster
            | Self::UpstreamProtocolError
            | Self::NoHealthyUpstream
            | Self::UpstreamConnectFailure
            | Self::UpstreamConnectionTermination
            | Self::UpstreamOverflow => S::SERVICE_UNAVAILABLE,
        }
    }

    /// The body of the local reply, in Envoy's words where Envoy has some.
    pub fn body(self) -> &'static str {
        match self {
            Self::NoRoute => "",
            Self::NoCluster => "cluster not found\n",
            Self::NoHealthyUpstream => "no healthy upstream\n",
            Self::UpstreamConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n"
            }
            Self::UpstreamConnectionTermination => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n"
            }
            Self::UpstreamRequestTimeout => "upstream request timeout\n",
            Self::DownstreamProtocolError => "bad request\n",
            Self::DownstreamConnectionTermination => "",
            Self::FaultInjected => "fault filter abort\n",
            Self::DelayInjected | Self::RetryLimitExceeded => "",
            Self::FilterFailure => "filter failure\n",
            Self::StreamIdleTimeout => "stream timeout\n",
            Self::UpstreamProtocolError => "upstream connect error or disconnect/reset before headers. reset reason: protocol error\n",
            Self::UpstreamOverflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow\n"
            }
            // Envoy's RBAC filter's words, without a newline.
            Self::RbacDenied => "RBAC: access denied",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The flags one request collected. Facts about the request live here, in its
/// context, and the `x-meshfast-flags` header is rendered from them once as
/// the response leaves (Envoy's `StreamInfo`): nothing is parsed back out of
/// a header, so nothing an upstream wrote can pass for meshfast's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u16);

const _: () = assert!(ResponseFlag::ALL.len() <= 16, "Flags holds 16");

impl Flags {
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= 1 << flag.index();
    }

    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & (1 << flag.index()) != 0
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// In a fixed order ([`ResponseFlag::ALL`]), whatever order they were set in.
    /// Walks the set bits only: every request's log goes through this once
    /// per counter set, and most requests have no flag at all.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let i = bits.trailing_zeros() as usize;
            bits &= bits.wrapping_sub(1);
            // `ALL` is in bit order (tested); no bit left: `i` is 16, past its end.
            ResponseFlag::ALL.get(i).copied()
        })
    }

    /// `FI,DI` — the header value and the filters' `info.flags`.
    pub fn render(self) -> String {
        let mut out = String::new();
        for f in self.iter() {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(f.as_str());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_in_a_fixed_order_once_each() {
        let mut f = Flags::default();
        assert!(f.is_empty());
        assert_eq!(f.render(), "");
        f.insert(ResponseFlag::RetryLimitExceeded);
        f.insert(ResponseFlag::DelayInjected);
        f.insert(ResponseFlag::DelayInjected);
        assert_eq!(f.render(), "DI,URX");
        assert!(f.contains(ResponseFlag::DelayInjected));
        assert!(!f.contains(ResponseFlag::NoRoute));
        assert_eq!(f.iter().count(), 2);
    }

    #[test]
    fn every_flag_has_its_own_name() {
        let names: std::collections::HashSet<_> =
            ResponseFlag::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), ResponseFlag::ALL.len());
        let rbac = ResponseFlag::RbacDenied;
        assert_eq!((rbac.as_str(), rbac.status().as_u16()), ("RBAC", 403));
        assert_eq!(rbac.body(), "RBAC: access denied");
    }

    #[test]
    fn all_is_in_bit_order() {
        for (i, f) in ResponseFlag::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i, "{f:?}");
        }
        let mut all = Flags::default();
        ResponseFlag::ALL.into_iter().for_each(|f| all.insert(f));
        assert!(all.iter().eq(ResponseFlag::ALL));
    }

    #[test]
    fn every_flag_has_its_own_bit() {
        let mut all = Flags::default();
        for f in ResponseFlag::ALL {
            assert!(!all.contains(f), "{f:?} shares a bit");
            all.insert(f);
        }
        assert_eq!(all.iter().collect::<Vec<_>>(), ResponseFlag::ALL.to_vec());
    }
}
