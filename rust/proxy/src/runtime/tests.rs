use super::*;

/// Round `r` of a cluster whose pods churn: a window of four endpoints that
/// moves on by one each round (one new pod, one gone).
fn churned(round: usize) -> ir::Snapshot {
    let cluster = |name: &str| ir::Cluster {
        name: name.into(),
        endpoints: (round..round + 4)
            .map(|i| ir::Endpoint {
                address: format!("10.{}.{}.{}:8080", i / 65536 % 256, i / 256 % 256, i % 256),
                weight: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ir::Snapshot {
        version: round as u64,
        clusters: vec![cluster("a"), cluster("b")],
        ..Default::default()
    }
}

#[test]
fn endpoint_state_stays_the_size_of_the_live_set_however_endpoints_churn() {
    let loads = EndpointStates::default();
    let registry = stats::Registry::default();
    let ids = HashMap::new();
    for round in 0..5_000 {
        let rt = Runtime::build(&churned(round), &ids, &registry, &loads).expect("build");
        assert_eq!(loads.len(), 8, "round {round}");
        drop(rt);
    }
}

#[test]
fn a_kept_endpoint_keeps_its_state_across_swaps() {
    let loads = EndpointStates::default();
    let registry = stats::Registry::default();
    let ids = HashMap::new();
    let first = Runtime::build(&churned(0), &ids, &registry, &loads).expect("build");
    let second = Runtime::build(&churned(1), &ids, &registry, &loads).expect("build");
    // Endpoint 1 of round 0 is endpoint 0 of round 1: the same state.
    let (before, after) = (
        &first.clusters[0].endpoints[1],
        &second.clusters[0].endpoints[0],
    );
    assert_eq!(before.address, after.address);
    assert!(Arc::ptr_eq(&before.state, &after.state));
}

#[test]
fn a_refused_snapshot_forgets_nothing() {
    let loads = EndpointStates::default();
    let registry = stats::Registry::default();
    let ids = HashMap::new();
    let _live = Runtime::build(&churned(0), &ids, &registry, &loads).expect("build");
    let mut bad = churned(100);
    bad.clusters[1].endpoints[0].address = "no-port".into();
    assert!(Runtime::build(&bad, &ids, &registry, &loads).is_err());
    let again = Runtime::build(&churned(0), &ids, &registry, &loads).expect("build");
    assert!(Arc::ptr_eq(
        &_live.clusters[0].endpoints[0].state,
        &again.clusters[0].endpoints[0].state
    ));
    assert_eq!(loads.len(), 8);
}

#[test]
fn the_sidecars_own_addresses_are_recognised_on_any_local_ip() {
    let mut rt = Runtime::empty();
    rt.own_addresses = vec![
        "127.0.0.1:15001".parse().expect("addr"),
        "0.0.0.0:15006".parse().expect("addr"),
    ];
    rt.protected
        .write()
        .push("10.1.2.3:15000".parse().expect("addr"));
    for own in [
        "[::ffff:127.0.0.1]:15001",
        "[::ffff:10.1.2.3]:15000",
        "127.0.0.1:15001",
        "127.0.0.2:15001",
        "0.0.0.0:15001",
        "10.9.9.9:15006",
        "10.1.2.3:15000",
        "127.0.0.1:15000",
    ] {
        assert!(rt.is_own(own.parse().expect("addr")), "{own}");
    }
    for other in ["10.9.9.9:15001", "10.1.2.4:15000", "127.0.0.1:8080"] {
        assert!(!rt.is_own(other.parse().expect("addr")), "{other}");
    }
}
