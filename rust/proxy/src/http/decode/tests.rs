use super::*;

#[test]
fn request_ids_are_uuid_v4() {
    let id = new_request_id();
    let s = id.to_str().expect("ascii");
    assert_eq!(s.len(), 36);
    assert_eq!(&s[14..15], "4");
    assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    assert_ne!(new_request_id(), id);
}

#[test]
fn a_clients_own_client_cert_header_is_replaced() {
    let mut h = HeaderMap::new();
    h.insert(XFCC, HeaderValue::from_static("URI=spiffe://forged"));
    set_client_cert(&mut h, Some("spiffe://td/ns/a/sa/me"), None);
    assert!(h.get(XFCC).is_none());
    set_client_cert(
        &mut h,
        Some("spiffe://td/ns/a/sa/me"),
        Some("spiffe://td/ns/b/sa/you"),
    );
    assert_eq!(
        h.get(XFCC).map(|v| v.as_bytes()),
        Some(&b"By=spiffe://td/ns/a/sa/me;URI=spiffe://td/ns/b/sa/you"[..])
    );
}

#[test]
fn authorities_are_host_and_numeric_port_only() {
    for good in [
        "a",
        "a.example:80",
        "10.0.0.1:8080",
        "[::1]:15001",
        "[2001:db8::1]",
        "svc-1.ns_x",
    ] {
        assert!(valid_authority(good), "{good}");
    }
    for bad in [
        "a b", "a@b", "a/b", "a:80:80", "a:abc", "a:", "a:99999", ":80", "", "[::1", "[zz]:1",
        "a\nb",
    ] {
        assert!(!valid_authority(bad), "{bad:?}");
    }
}

#[test]
fn framing_refuses_what_cannot_be_passed_on_faithfully() {
    let req = |f: fn(http::request::Builder) -> http::request::Builder| {
        f(Request::builder().uri("/")).body(()).expect("request")
    };
    let fine = |r: Result<Option<&HeaderValue>, (StatusCode, &str)>| r.is_ok();
    assert!(fine(framing(&req(|b| b.header("host", "a")))));
    assert!(fine(framing(&req(|b| b
        .header("host", "a")
        .header("transfer-encoding", "Chunked")))));
    let status =
        |r: Result<Option<&HeaderValue>, (StatusCode, &str)>| r.err().map(|e| e.0.as_u16());
    assert_eq!(
        status(framing(&req(|b| b.header("host", "a").header("host", "b")))),
        Some(400)
    );
    for te in ["gzip, chunked", "chunked, gzip", "gzip"] {
        let r = Request::builder()
            .uri("/")
            .header("transfer-encoding", te)
            .body(())
            .expect("request");
        assert_eq!(status(framing(&r)), Some(501), "{te}");
    }
    let twice = req(|b| {
        b.header("transfer-encoding", "chunked")
            .header("transfer-encoding", "chunked")
    });
    assert_eq!(status(framing(&twice)), Some(501));
    let connect = Request::builder()
        .method("CONNECT")
        .uri("a:443")
        .body(())
        .expect("request");
    assert_eq!(status(framing(&connect)), Some(501));
    let mismatch = Request::builder()
        .uri("http://a/")
        .header("host", "b")
        .body(())
        .expect("request");
    assert_eq!(status(framing(&mismatch)), Some(400));
    let agree = Request::builder()
        .uri("http://a:80/")
        .header("host", "A:80")
        .body(())
        .expect("request");
    assert_eq!(
        framing(&agree).ok().flatten().map(|h| h.as_bytes()),
        Some(&b"A:80"[..])
    );
    let h2 = Request::builder()
        .uri("http://a/")
        .version(Version::HTTP_2)
        .header("host", "b")
        .body(())
        .expect("request");
    assert!(fine(framing(&h2)), "HTTP/2 goes by :authority");
}

#[test]
fn options_asterisk_passes_and_http2_falls_back_to_host() {
    // (A `:path` without `/` is refused too, though the `http` crate already
    // refuses to build one.)
    let options = Request::builder()
        .method("OPTIONS")
        .uri("*")
        .body(())
        .expect("request");
    assert!(framing(&options).is_ok(), "OPTIONS * stays allowed");
    // HTTP/2 without :authority (origin-form URI) but with Host: Host routes.
    let h2 = Request::builder()
        .uri("/x")
        .version(Version::HTTP_2)
        .header("host", "svc")
        .body(())
        .expect("request");
    let host = framing(&h2).ok().flatten();
    assert_eq!(authority(&h2, host).as_deref(), Some("svc"));
}

#[test]
fn authority_prefers_the_uri_then_host() {
    let req = Request::get("http://a.example:8080/x")
        .header(header::HOST, "b.example")
        .body(())
        .expect("request");
    let host = req.headers().get(header::HOST);
    assert_eq!(authority(&req, host).as_deref(), Some("a.example:8080"));
    let req = Request::get("/x")
        .header(header::HOST, "b.example")
        .body(())
        .expect("request");
    let host = req.headers().get(header::HOST);
    assert_eq!(authority(&req, host).as_deref(), Some("b.example"));
    let req = Request::get("/x")
        .header(header::HOST, "")
        .body(())
        .expect("request");
    let host = req.headers().get(header::HOST);
    assert_eq!(authority(&req, host), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a client writes as Host: no panic, and what is accepted
        /// is an authority with neither userinfo nor a bad port.
        #[test]
        fn accepted_authorities_are_plain_host_and_port(a in "\\PC{0,40}") {
            if valid_authority(&a) {
                let parsed = http::uri::Authority::try_from(a.as_str());
                prop_assert!(parsed.is_ok(), "{:?}", a);
                prop_assert!(!a.contains('@') && !a.contains('/') && !a.contains(' '));
            }
        }

        /// Everything accepted parses as an `http` authority too.
        #[test]
        fn accepted_reg_names_parse_as_authorities(a in "[a-zA-Z0-9!$&'()*+,;=._~-]{1,12}(:[0-9]{1,5})?") {
            if valid_authority(&a) {
                prop_assert!(http::uri::Authority::try_from(a.as_str()).is_ok(), "{:?}", a);
            }
        }

        #[test]
        fn host_like_strings_with_a_port_are_accepted(host in "[a-z0-9][a-z0-9.-]{0,20}", port in 0u16..) {
            let with_port = format!("{host}:{port}");
            prop_assert!(valid_authority(&host));
            prop_assert!(valid_authority(&with_port));
        }

        /// Normalizing keeps the query byte for byte.
        #[test]
        fn set_path_keeps_the_query(path in "/[a-z./%]{0,20}", query in proptest::option::of("[a-z=&/.%]{0,20}")) {
            let uri = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let Ok(mut req) = Request::get(uri.as_str()).body(()) else {
                return Ok(());
            };
            let normal = normalize_path(req.uri().path(), meshfast_route::Normalization::Base).into_owned();
            prop_assert!(set_path(&mut req, &normal).is_some());
            prop_assert_eq!(req.uri().query(), query.as_deref());
            prop_assert_eq!(req.uri().path(), normal.as_str());
        }
    }
}
