//! Forward proxying: absolute-form requests from allowed clients.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn absolute_form_reaches_origin_in_origin_form_with_its_host() {
    let origin = Origin::fixed("hello").await;
    let proxy = start_default().await;
    let mut req = get(&origin.url("/fwd/a?x=1"));
    // A stale Host must be replaced by the URI's authority (RFC 9112 §3.2.2).
    req.headers_mut()
        .insert("host", "wrong.example".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "hello");
    let seen = origin.last();
    assert_eq!(seen.target, "/fwd/a?x=1");
    assert_eq!(seen.headers["host"], origin.addr.to_string());
    proxy.shutdown().await;
}

#[tokio::test]
async fn response_bodies_of_0_1k_and_10m_arrive_intact() {
    let origin = Origin::start(|seen| {
        let len: usize = seen.target.rsplit('/').next().unwrap().parse().unwrap();
        http::Response::new(TestBody::full(pattern(len)))
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    for len in [0usize, 1024, 10 << 20] {
        let got = client.get(&origin.url(&format!("/fwd-size/{len}"))).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("content-length"), Some(len.to_string().as_str()));
        assert_eq!(got.body.len(), len);
        assert!(got.body == pattern(len), "body of {len} bytes differs");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_bodies_of_0_1k_and_10m_arrive_intact() {
    let origin = Origin::start(|seen| {
        let reply = format!("{}", seen.body.len());
        http::Response::new(TestBody::full(Bytes::from(reply)))
    })
    .await;
    let proxy = start_default().await;
    let mut client = Client::connect(proxy.addr()).await;
    for len in [0usize, 1024, 10 << 20] {
        let req = Request::post(origin.url(&format!("/fwd-upload/{len}")))
            .body(Full::new(pattern(len)))
            .unwrap();
        let got = client.send(req).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), len.to_string());
        let seen = origin.last();
        assert!(
            seen.body == pattern(len),
            "uploaded body of {len} bytes differs"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunked_responses_arrive_intact() {
    let origin = Origin::start(|_| {
        let chunks = (0..50)
            .map(|i| Bytes::from(format!("chunk-{i};")))
            .collect();
        http::Response::new(TestBody::chunked(chunks))
    })
    .await;
    let proxy = start_default().await;
    let got = fetch(proxy.addr(), get(&origin.url("/fwd-chunked"))).await;
    let expected: String = (0..50).map(|i| format!("chunk-{i};")).collect();
    assert_eq!(got.text(), expected);
    // Through raw bytes: the client really gets chunked framing, not a guess.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url("/fwd-chunked-raw")
    );
    let raw_reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(
        raw_reply
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{raw_reply}"
    );
    assert!(raw_reply.contains("chunk-49;"), "{raw_reply}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn curl_uses_it_as_a_proxy() {
    let origin = Origin::fixed("via curl").await;
    let proxy = start_default().await;
    let url = origin.url("/fwd-curl");
    let proxy_url = format!("http://{}", proxy.addr());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-i", "-x", &proxy_url, &url])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("via: 1.1 viaduct"),
        "{text}"
    );
    assert!(text.ends_with("via curl"), "{text}");
    assert_eq!(origin.count("/fwd-curl"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn clients_outside_allow_clients_get_403_and_nothing_is_forwarded() {
    let origin = Origin::fixed("secret").await;
    let mut config = base_config();
    config.forward.allow_clients = vec!["10.0.0.0/8".parse().unwrap()];
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), get(&origin.url("/fwd-acl"))).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(
        got.text().contains("not allowed to use this proxy"),
        "{}",
        got.text()
    );
    assert_eq!(origin.count("/fwd-acl"), 0);
    // The proxy keeps serving: a reverse request still gets a clear answer.
    let mut req = get("/nothing-here");
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    let got = fetch(proxy.addr(), req).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    proxy.shutdown().await;
}

#[tokio::test]
async fn forward_proxying_can_be_disabled() {
    let origin = Origin::fixed("x").await;
    let mut config = base_config();
    config.forward.enabled = false;
    let proxy = start(config).await;
    let got = fetch(proxy.addr(), get(&origin.url("/fwd-off"))).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(got.text().contains("disabled"), "{}", got.text());
    assert_eq!(origin.count("/fwd-off"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_for_the_proxy_itself_is_not_forwarded_to_itself() {
    let origin = Origin::fixed("routed").await;
    let mut config = base_config();
    config.routes.push(route("*", "/self/", origin.addr));
    let proxy = start(config).await;
    // Absolute-form aimed at the proxy's own address is served as local
    // (reverse) traffic, once, never looped back through the proxy port.
    let got = fetch(
        proxy.addr(),
        get(&format!("http://{}/self/x", proxy.addr())),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "routed");
    assert_eq!(origin.count("/self/x"), 1);
    let got = fetch(proxy.addr(), get(&format!("http://{}/other", proxy.addr()))).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    proxy.shutdown().await;
}

#[tokio::test]
async fn other_schemes_in_absolute_form_get_a_clear_answer() {
    let proxy = start_default().await;
    let got = fetch(proxy.addr(), get("ftp://example.test/")).await;
    assert_eq!(got.status, StatusCode::NOT_IMPLEMENTED);
    assert!(got.text().contains("ftp://"), "{}", got.text());
    proxy.shutdown().await;
}
