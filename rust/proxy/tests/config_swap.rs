//! Config swaps: a new snapshot re-routes a running listener (even for
//! connections opened before the swap), bad snapshots are refused whole and
//! the previous one keeps serving, listeners come and go.

mod support;

use meshfast_proxy::{ir, ProxyError};
use support::*;

/// Everything on listener `HTTP` goes to `cluster`, whose one endpoint is `addr`.
fn all_to(version: u64, name: &str, addr: &str) -> ir::Snapshot {
    http_snapshot(
        version,
        vec![vhost(
            "vh",
            &["*"],
            vec![route("r", ir::RouteMatch::default(), name)],
        )],
        vec![cluster(name, &[addr])],
    )
}

#[test]
fn v2_reroutes_the_same_listener_even_on_open_connections() {
    let h = Harness::new(2);
    let one = echo("one", 200);
    let two = echo("two", 200);
    assert_eq!(h.apply(&all_to(1, "one", &one.address().to_string())), 1);
    let addr = h.addr(HTTP);

    let mut kept = h.block_on(Client::connect(addr));
    assert_eq!(h.block_on(kept.send(get("svc", "/"))).upstream(), "one");
    assert_eq!(h.get("svc", "/").upstream(), "one");

    assert_eq!(h.apply(&all_to(2, "two", &two.address().to_string())), 2);
    assert_eq!(h.addr(HTTP), addr, "the listener keeps its socket");
    assert_eq!(h.proxy.runtime().version, 2);

    assert_eq!(h.get("svc", "/").upstream(), "two");
    // A request reads the snapshot when it starts: an old connection follows v2 too.
    assert_eq!(h.block_on(kept.send(get("svc", "/"))).upstream(), "two");
}

#[test]
fn bad_snapshots_are_refused_and_v1_keeps_serving() {
    let h = Harness::new(2);
    let one = echo("one", 200);
    let good = all_to(1, "one", &one.address().to_string());
    h.apply(&good);

    let mut no_port = all_to(2, "two", "127.0.0.1");
    no_port.clusters[0].endpoints[0].address = "127.0.0.1".into();
    let mut unknown_table = good.clone();
    unknown_table.version = 3;
    unknown_table.listeners[0].route_table = Some("missing".into());
    let mut duplicate_cluster = good.clone();
    duplicate_cluster.version = 4;
    duplicate_cluster
        .clusters
        .push(duplicate_cluster.clusters[0].clone());
    let mut bad_regex = good.clone();
    bad_regex.version = 5;
    bad_regex.route_tables[0].virtual_hosts[0].routes[0].matcher = path(ir::MatchKind::Regex, "(");
    let mut bad_status = good.clone();
    bad_status.version = 6;
    bad_status.route_tables[0].virtual_hosts[0].routes[0]
        .action
        .direct_response = Some(ir::DirectResponse {
        status: 1000,
        body: None,
    });

    let err = h.try_apply(&no_port).expect_err("endpoint without a port");
    assert!(matches!(err, ProxyError::Build(_)), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    for (what, snap) in [
        ("unknown route table", &unknown_table),
        ("duplicate cluster", &duplicate_cluster),
        ("invalid regex", &bad_regex),
        ("invalid status", &bad_status),
    ] {
        let err = h.try_apply(snap).expect_err(what);
        assert!(matches!(err, ProxyError::Build(_)), "{what}: {err:?}");
    }
    let err = h
        .proxy
        .apply(b"\x93not msgpack IR")
        .expect_err("garbage bytes");
    assert!(matches!(err, ProxyError::Decode(_)), "{err:?}");

    assert_eq!(h.proxy.runtime().version, 1);
    for _ in 0..3 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "one");
    }
}

#[test]
fn a_listener_that_cannot_bind_changes_nothing() {
    let h = Harness::new(1);
    let one = echo("one", 200);
    h.apply(&all_to(1, "one", &one.address().to_string()));
    // Held without SO_REUSEPORT, so the proxy cannot share it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut snap = all_to(2, "one", &one.address().to_string());
    snap.listeners.push(ir::Listener {
        name: "second".into(),
        address: taken.local_addr().expect("addr").to_string(),
        route_table: Some("rt".into()),
        ..Default::default()
    });
    let err = h.try_apply(&snap).expect_err("port in use");
    assert!(matches!(err, ProxyError::Bind { .. }), "{err:?}");
    assert_eq!(h.proxy.runtime().version, 1);
    assert_eq!(h.proxy.listeners().len(), 1);
    assert_eq!(h.get("svc", "/").upstream(), "one");
}

#[test]
fn listeners_added_and_removed_by_a_swap() {
    let h = Harness::new(2);
    let one = echo("one", 200);
    let v1 = all_to(1, "one", &one.address().to_string());
    h.apply(&v1);
    let first = h.addr(HTTP);

    let mut v2 = v1.clone();
    v2.version = 2;
    v2.listeners.push(ir::Listener {
        name: "second".into(),
        address: "127.0.0.1:0".into(),
        route_table: Some("rt".into()),
        ..Default::default()
    });
    h.apply(&v2);
    assert_eq!(h.proxy.listeners().len(), 2);
    assert_eq!(h.send("second", get("svc", "/")).upstream(), "one");
    assert_eq!(h.get("svc", "/").upstream(), "one");

    // v3 drops the first listener: its port stops accepting.
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.listeners.remove(0);
    h.apply(&v3);
    let names: Vec<String> = h.proxy.listeners().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["second".to_owned()]);
    h.eventually("the removed listener's port to close", || {
        std::net::TcpStream::connect(first).is_err()
    });
    assert_eq!(h.send("second", get("svc", "/")).upstream(), "one");
}

#[test]
fn a_connection_whose_listener_is_gone_gets_no_route_with_the_request_id() {
    let h = Harness::new(1);
    let one = echo("one", 200);
    let v1 = all_to(1, "one", &one.address().to_string());
    h.apply(&v1);
    let addr = h.addr(HTTP);
    let mut c = h.block_on(Client::connect(addr));
    assert_eq!(h.block_on(c.send(get("svc", "/"))).status, 200);
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.listeners.clear();
    h.apply(&v2);
    // The open keep-alive connection outlives its listener.
    let mut req = get("svc", "/after");
    req.headers_mut()
        .insert("x-request-id", http::HeaderValue::from_static("abc-123"));
    let r = h.block_on(c.send(req));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-meshfast-flags"), Some("NR"));
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = h.block_on(c.send(get("svc", "/again")));
    assert_eq!(r.header("x-meshfast-flags"), Some("NR"));
    assert_eq!(
        r.header("x-request-id").map(str::len),
        Some(36),
        "a new UUID"
    );
}

/// Like duplicate clusters and route tables. Accepted, the first listener's
/// sockets are orphaned: not in `listeners()`, answering 404 NR, and never
/// closed, not even when a later snapshot removes the name.
#[test]
fn duplicate_listener_names_are_refused() {
    let h = Harness::new(1);
    let one = echo("one", 200);
    let mut snap = all_to(1, "one", &one.address().to_string());
    snap.listeners.push(snap.listeners[0].clone());
    let result = h.try_apply(&snap);
    let bound = h.proxy.listeners();
    assert!(
        result.is_err(),
        "applied as v{:?} with listeners {bound:?}",
        result.ok()
    );
}

#[test]
fn a_request_in_flight_finishes_under_the_snapshot_it_started_with() {
    let h = Harness::new(1);
    let (mut up, gate) = h.gated_upstream("gated");
    let up_addr = up.address();
    let tagged = |version: u64| {
        let mut s = all_to(version, "c", &up_addr);
        s.route_tables[0].virtual_hosts[0].routes[0]
            .action
            .response_headers
            .set
            .push(ir::HeaderValue {
                name: "x-config".into(),
                value: format!("v{version}"),
            });
        s
    };
    h.apply(&tagged(1));
    let addr = h.addr(HTTP);
    let in_flight = h.spawn(async move {
        let mut c = Client::connect(addr).await;
        c.send(get("svc", "/slow")).await
    });
    // The upstream holds the request: it is in flight under v1.
    assert_eq!(up.next_request(&h).path, "/slow");
    h.apply(&tagged(2));
    gate.add_permits(1);
    let r = h.block_on(in_flight).expect("client task");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-config"), Some("v1"));

    gate.add_permits(1);
    let r = h.get("svc", "/fast");
    assert_eq!(r.header("x-config"), Some("v2"));
}
