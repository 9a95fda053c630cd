//! Property tests of the msgpack codec: decoding never panics, whatever the
//! bytes, and generated snapshots survive `decode(encode(s))` unchanged.

use meshfast_ir::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

fn name() -> impl Strategy<Value = String> {
    // Mostly short names, now and then any Unicode.
    prop_oneof![4 => "[a-z0-9|.*/:-]{0,16}", 1 => any::<String>()]
}

fn string_match() -> impl Strategy<Value = StringMatch> {
    (
        prop_oneof![
            Just(MatchKind::Exact),
            Just(MatchKind::Prefix),
            Just(MatchKind::Regex)
        ],
        name(),
        any::<bool>(),
    )
        .prop_map(|(kind, value, ignore_case)| StringMatch {
            kind,
            value,
            ignore_case,
        })
}

fn header_ops() -> impl Strategy<Value = HeaderOps> {
    let hv = || (name(), name()).prop_map(|(name, value)| HeaderValue { name, value });
    (vec(hv(), 0..3), vec(hv(), 0..2), vec(name(), 0..2)).prop_map(|(set, add, remove)| HeaderOps {
        set,
        add,
        remove,
    })
}

fn weighted() -> impl Strategy<Value = Vec<WeightedCluster>> {
    vec(
        (name(), any::<u32>(), header_ops(), header_ops()).prop_map(
            |(cluster, weight, request_headers, response_headers)| WeightedCluster {
                cluster,
                weight,
                request_headers,
                response_headers,
            },
        ),
        0..3,
    )
}

fn route_match() -> impl Strategy<Value = RouteMatch> {
    (
        option::of(string_match()),
        option::of(string_match()),
        option::of(string_match()),
        option::of(string_match()),
        vec(
            (name(), option::of(string_match()), any::<bool>()).prop_map(
                |(name, value, invert)| HeaderMatch {
                    name,
                    value,
                    invert,
                },
            ),
            0..3,
        ),
        vec(
            (name(), option::of(string_match()))
                .prop_map(|(name, value)| QueryMatch { name, value }),
            0..2,
        ),
    )
        .prop_map(
            |(path, method, authority, scheme, headers, query_params)| RouteMatch {
                path,
                method,
                authority,
                scheme,
                headers,
                query_params,
            },
        )
}

fn retry() -> impl Strategy<Value = RetryPolicy> {
    (
        any::<u32>(),
        any::<u64>(),
        vec(name(), 0..3),
        vec(any::<u16>(), 0..3),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(attempts, per_try, on, codes, backoff, prev, remote)| RetryPolicy {
                attempts,
                per_try_timeout_ms: per_try,
                retry_on: on,
                retriable_status_codes: codes,
                backoff_base_ms: backoff,
                previous_hosts: prev,
                remote_localities: remote,
            },
        )
}

fn local_actions(
) -> impl Strategy<Value = (Option<Redirect>, Option<DirectResponse>, Option<Fault>)> {
    let redirect = (
        option::of(name()),
        option::of(name()),
        option::of(any::<u32>()),
        option::of(name()),
        option::of(name()),
        option::of(name()),
        any::<u16>(),
    )
        .prop_map(
            |(scheme, authority, port, derive_port, path, prefix_rewrite, code)| Redirect {
                scheme,
                authority,
                port,
                derive_port,
                path,
                prefix_rewrite,
                code,
            },
        );
    let direct = (any::<u16>(), option::of(vec(any::<u8>(), 0..64))).prop_map(|(status, body)| {
        DirectResponse {
            status,
            body: body.map(Into::into),
        }
    });
    let fault = (
        any::<u64>(),
        any::<u32>(),
        option::of(any::<u16>()),
        option::of(any::<u32>()),
        any::<u32>(),
    )
        .prop_map(|(delay_ms, delay_millionths, http, grpc, abort)| Fault {
            delay_ms,
            delay_millionths,
            abort_http_status: http,
            abort_grpc_status: grpc,
            abort_millionths: abort,
        });
    (option::of(redirect), option::of(direct), option::of(fault))
}

fn extras() -> impl Strategy<Value = (Option<Rewrite>, Vec<Mirror>, Option<Cors>, Vec<FilterRef>)> {
    let rewrite = (
        option::of(name()),
        option::of(name()),
        option::of(
            (name(), name()).prop_map(|(pattern, substitution)| RegexRewrite {
                pattern,
                substitution,
            }),
        ),
    )
        .prop_map(|(uri, authority, regex)| Rewrite {
            uri,
            authority,
            regex,
        });
    let mirror = (name(), any::<u32>()).prop_map(|(cluster, millionths)| Mirror {
        cluster,
        millionths,
    });
    let cors = (
        vec(string_match(), 0..2),
        vec(name(), 0..2),
        option::of(any::<u64>()),
        option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(allow_origins, methods, max_age_s, creds, forward)| Cors {
            allow_origins,
            allow_methods: methods.clone(),
            allow_headers: methods.clone(),
            expose_headers: methods,
            max_age_s,
            allow_credentials: creds,
            forward_unmatched_preflights: forward,
        });
    let filter = (
        any::<u32>(),
        name(),
        any::<u16>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(id, name, failure_status, timeout_ms, req, resp)| FilterRef {
                id,
                name,
                failure_status,
                timeout_ms,
                request_body_limit: req,
                response_body_limit: resp,
            },
        );
    (
        option::of(rewrite),
        vec(mirror, 0..2),
        option::of(cors),
        vec(filter, 0..2),
    )
}

fn route() -> impl Strategy<Value = Route> {
    (
        name(),
        route_match(),
        (weighted(), any::<u64>(), header_ops(), header_ops()),
        option::of(retry()),
        local_actions(),
        extras(),
        option::of(name()),
    )
        .prop_map(
            |(
                name,
                matcher,
                (clusters, timeout_ms, request_headers, response_headers),
                retry,
                (redirect, direct_response, fault),
                (rewrite, mirrors, cors, filters),
                stat_prefix,
            )| Route {
                name,
                matcher,
                action: RouteAction {
                    clusters,
                    timeout_ms,
                    redirect,
                    direct_response,
                    rewrite,
                    request_headers,
                    response_headers,
                    retry,
                    fault,
                    mirrors,
                    cors,
                    filters,
                },
                stat_prefix,
            },
        )
}

fn route_table() -> impl Strategy<Value = RouteTable> {
    (
        name(),
        vec(
            (name(), vec(name(), 0..3), vec(route(), 0..3)).prop_map(|(name, domains, routes)| {
                VirtualHost {
                    name,
                    domains,
                    routes,
                }
            }),
            0..3,
        ),
    )
        .prop_map(|(name, virtual_hosts)| RouteTable {
            name,
            virtual_hosts,
        })
}

fn listener() -> impl Strategy<Value = Listener> {
    let tls = (
        name(),
        name(),
        option::of(name()),
        option::of(name()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(cert_chain, private_key, client_ca, min_version, permissive, fcc)| TlsServer {
                cert_chain,
                private_key,
                client_ca,
                min_version,
                permissive,
                forward_client_cert: fcc,
            },
        );
    (
        name(),
        name(),
        prop_oneof![
            Just(ListenerProtocol::Http),
            Just(ListenerProtocol::Tcp),
            Just(ListenerProtocol::Tls)
        ],
        option::of(name()),
        vec(
            (name(), weighted()).prop_map(|(name, clusters)| TcpRoute { name, clusters }),
            0..2,
        ),
        option::of(tls),
        vec(
            (name(), vec(name(), 0..3), weighted()).prop_map(|(name, sni_hosts, clusters)| {
                SniRoute {
                    name,
                    sni_hosts,
                    clusters,
                }
            }),
            0..2,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(name, address, protocol, route_table, tcp_routes, tls, sni_routes, authz)| Listener {
                name,
                address,
                protocol,
                route_table,
                tcp_routes,
                tls,
                sni_routes,
                authz,
            },
        )
}

fn authz_value() -> impl Strategy<Value = AuthzValue> {
    (
        prop_oneof![
            Just(AuthzMatch::Exact),
            Just(AuthzMatch::Prefix),
            Just(AuthzMatch::Suffix),
            Just(AuthzMatch::Present),
            Just(AuthzMatch::Regex),
            Just(AuthzMatch::Cidr),
            Just(AuthzMatch::Port),
            Just(AuthzMatch::Template),
        ],
        name(),
    )
        .prop_map(|(kind, value)| AuthzValue { kind, value })
}

fn authz_condition() -> impl Strategy<Value = AuthzCondition> {
    (
        prop_oneof![
            Just(AuthzAttribute::SourcePrincipal),
            Just(AuthzAttribute::SourceIp),
            Just(AuthzAttribute::RemoteIp),
            Just(AuthzAttribute::DestinationIp),
            Just(AuthzAttribute::DestinationPort),
            Just(AuthzAttribute::Sni),
            Just(AuthzAttribute::Host),
            Just(AuthzAttribute::Method),
            Just(AuthzAttribute::Path),
            Just(AuthzAttribute::Header),
            Just(AuthzAttribute::RequestAuth),
            Just(AuthzAttribute::Metadata),
        ],
        name(),
        vec(authz_value(), 0..2),
        vec(authz_value(), 0..2),
    )
        .prop_map(|(attribute, key, values, not_values)| AuthzCondition {
            attribute,
            key,
            values,
            not_values,
        })
}

fn authz_policies() -> impl Strategy<Value = Vec<AuthzPolicy>> {
    let rule = (
        vec(vec(authz_condition(), 0..2), 0..2),
        vec(vec(authz_condition(), 0..2), 0..2),
        vec(authz_condition(), 0..2),
    )
        .prop_map(|(from, to, when)| AuthzRule { from, to, when });
    let policy = (
        name(),
        prop_oneof![
            Just(AuthzAction::Allow),
            Just(AuthzAction::Deny),
            Just(AuthzAction::Audit)
        ],
        any::<bool>(),
        vec(rule, 0..2),
    )
        .prop_map(|(name, action, dry_run, rules)| AuthzPolicy {
            name,
            action,
            dry_run,
            rules,
        });
    vec(policy, 0..2)
}

fn cluster() -> impl Strategy<Value = Cluster> {
    let endpoint = (
        name(),
        any::<u32>(),
        btree_map(name(), name(), 0..3),
        name(),
        any::<u32>(),
    )
        .prop_map(|(address, weight, labels, locality, priority)| Endpoint {
            address,
            weight,
            labels,
            locality,
            priority,
        });
    let hash = (
        prop_oneof![
            Just(HashSource::Header),
            Just(HashSource::Cookie),
            Just(HashSource::SourceIp),
            Just(HashSource::Query)
        ],
        name(),
        option::of(any::<u64>()),
        option::of(name()),
        prop_oneof![Just(HashAlgorithm::Ring), Just(HashAlgorithm::Maglev)],
        any::<u64>(),
    )
        .prop_map(
            |(source, name, cookie_ttl_ms, cookie_path, algorithm, table_size)| HashPolicy {
                source,
                name,
                cookie_ttl_ms,
                cookie_path,
                algorithm,
                table_size,
            },
        );
    let outlier = (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(c5, cg, interval, base, max, min)| OutlierDetection {
            consecutive_5xx: c5,
            consecutive_gateway: cg,
            interval_ms: interval,
            base_ejection_ms: base,
            max_ejection_percent: max,
            min_health_percent: min,
        });
    // Finite floats only: NaN is not equal to itself.
    let warmup = (any::<u64>(), -1e9f64..1e9, -1e9f64..1e9).prop_map(
        |(duration_ms, min_percent, aggression)| Warmup {
            duration_ms,
            min_percent,
            aggression,
        },
    );
    let tls = (
        option::of(name()),
        option::of(name()),
        option::of(name()),
        option::of(name()),
        vec(name(), 0..2),
        any::<bool>(),
        any::<bool>(),
        option::of(name()),
    )
        .prop_map(
            |(ca_certs, client_cert, private_key, sni, sans, skip, mutual, td)| UpstreamTls {
                ca_certs,
                client_cert,
                private_key,
                sni,
                subject_alt_names: sans,
                insecure_skip_verify: skip,
                istio_mutual: mutual,
                trust_domain: td,
            },
        );
    let limits = (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(max_connections, max_pending_requests, max_requests, max_retries)| ConnectionLimits {
            max_connections,
            max_pending_requests,
            max_requests,
            max_retries,
        },
    );
    let failure_rate = (
        0.0f64..1.0,
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(threshold, tau_ms, min_requests, cool_down_ms, max_cool_down_ms, probes)| {
                FailureRateBreaker {
                    threshold,
                    tau_ms,
                    min_requests,
                    cool_down_ms,
                    max_cool_down_ms,
                    probes,
                }
            },
        );
    (
        (
            name(),
            prop_oneof![
                Just(LbPolicy::RoundRobin),
                Just(LbPolicy::LeastRequest),
                Just(LbPolicy::Random),
                Just(LbPolicy::PeakEwma)
            ],
            prop_oneof![
                Just(UpstreamProtocol::Http1),
                Just(UpstreamProtocol::Http2),
                Just(UpstreamProtocol::Tcp)
            ],
            any::<u64>(),
            vec(endpoint, 0..3),
        ),
        option::of(hash),
        option::of(outlier),
        option::of(warmup),
        any::<bool>(),
        option::of(tls),
        option::of(limits),
        option::of(failure_rate),
    )
        .prop_map(
            |(
                (name, lb, protocol, connect_timeout_ms, endpoints),
                hash,
                outlier,
                warmup,
                original_dst,
                tls,
                limits,
                failure_rate,
            )| Cluster {
                name,
                lb,
                protocol,
                connect_timeout_ms,
                endpoints,
                hash,
                outlier,
                warmup,
                original_dst,
                tls,
                limits,
                failure_rate,
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        vec(listener(), 0..3),
        vec(route_table(), 0..2),
        vec(cluster(), 0..3),
        prop_oneof![
            Just(PathNormalization::None),
            Just(PathNormalization::Base),
            Just(PathNormalization::MergeSlashes),
            Just(PathNormalization::DecodeAndMergeSlashes),
        ],
        any::<bool>(),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()),
        (authz_policies(), authz_policies()),
    )
        .prop_map(
            |(
                version,
                listeners,
                route_tables,
                clusters,
                path_normalization,
                header,
                limits,
                authz,
            )| {
                Snapshot {
                    version,
                    listeners,
                    route_tables,
                    clusters,
                    path_normalization,
                    original_dst_header: header,
                    downstream: Downstream {
                        request_headers_timeout_ms: limits.0,
                        idle_timeout_ms: limits.1,
                        stream_idle_timeout_ms: limits.2,
                        max_connections: limits.3,
                    },
                    authz: authz.0,
                    authz_tcp: authz.1,
                }
            },
        )
}

fn has_nan(s: &Snapshot) -> bool {
    s.clusters
        .iter()
        .filter_map(|c| c.warmup.as_ref())
        .any(|w| w.min_percent.is_nan() || w.aggression.is_nan())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(snap) = Snapshot::decode(&bytes) {
            // Whatever decodes re-encodes to itself (NaN floats aside).
            if !has_nan(&snap) {
                prop_assert_eq!(Snapshot::decode(&snap.encode()).ok(), Some(snap));
            }
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity(snap in snapshot()) {
        let bytes = snap.encode();
        prop_assert!(!bytes.is_empty());
        let back = Snapshot::decode(&bytes);
        prop_assert!(back.is_ok(), "{:?}", back.err());
        prop_assert_eq!(back.ok(), Some(snap));
    }

    #[test]
    fn decode_never_panics_on_damaged_encodings(
        snap in snapshot(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = snap.encode();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        // Damaged in place, then also cut short.
        let _ = Snapshot::decode(&bytes);
        let _ = Snapshot::decode(&bytes[..cut.index(bytes.len() + 1)]);
    }
}

#[test]
fn missing_fields_take_their_defaults() {
    // An empty map is a valid snapshot: every field has a default
    // (the Python side omits what it does not set).
    let empty_map = [0x80u8];
    assert_eq!(
        Snapshot::decode(&empty_map).expect("empty map decodes"),
        Snapshot::default()
    );
}
