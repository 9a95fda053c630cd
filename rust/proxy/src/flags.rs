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
    /// Fault injection aborted the request.
    FaultInjected,
    /// Fault injection delayed the request.
    DelayInjected,
    /// Retries ran out; the last try's answer was passed on.
    RetryLimitExceeded,
    /// A Python filter raised.
    FilterFailure,
}

// === impl ResponseFlag ===

impl ResponseFlag {
    pub const ALL: [ResponseFlag; 11] = [
        Self::NoRoute,
        Self::NoCluster,
        Self::NoHealthyUpstream,
        Self::UpstreamConnectFailure,
        Self::UpstreamConnectionTermination,
        Self::UpstreamRequestTimeout,
        Self::DownstreamProtocolError,
        Self::FaultInjected,
        Self::DelayInjected,
        Self::RetryLimitExceeded,
        Self::FilterFailure,
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
            Self::FaultInjected => "FI",
            Self::DelayInjected => "DI",
            Self::RetryLimitExceeded => "URX",
            Self::FilterFailure => "FF",
        }
    }

    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::NoRoute => S::NOT_FOUND,
            Self::UpstreamRequestTimeout => S::GATEWAY_TIMEOUT,
            Self::DownstreamProtocolError => S::BAD_REQUEST,
            // Fault aborts carry their configured status; these are only defaults.
            Self::FaultInjected | Self::DelayInjected => S::INTERNAL_SERVER_ERROR,
            Self::RetryLimitExceeded => S::SERVICE_UNAVAILABLE,
            Self::FilterFailure => S::INTERNAL_SERVER_ERROR,
            Self::NoCluster
            | Self::NoHealthyUpstream
            | Self::UpstreamConnectFailure
            | Self::UpstreamConnectionTermination => S::SERVICE_UNAVAILABLE,
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
            Self::FaultInjected => "fault filter abort\n",
            Self::DelayInjected | Self::RetryLimitExceeded => "",
            Self::FilterFailure => "filter failure\n",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
