//! Cache peers (`[cluster]`): every URL has one owner among the nodes; the
//! others fetch it through the owner, so the origin sees each URL once.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

/// Free ports for the nodes' listeners (the peers must know each other's
/// addresses before they start).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

async fn cluster(origin: &Origin, local_ttl: &str) -> (Vec<viaduct::Running>, Vec<SocketAddr>) {
    let addrs = free_addrs(3);
    let peers: Vec<String> = addrs.iter().map(|a| format!("\"http://{a}\"")).collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nname = \"node{i}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[cluster]\npeers = [{}]\nself = \"http://{addr}\"\nlocal_ttl = \"{local_ttl}\"\n[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
            peers.join(", "),
            origin.addr
        );
        let config = viaduct::Config::from_toml(&text, "node.toml").unwrap();
        nodes.push(start(config).await);
    }
    (nodes, addrs)
}

fn at(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

#[tokio::test]
async fn each_url_reaches_the_origin_once_whichever_node_is_asked() {
    let origin = Origin::start(|seen| {
        let mut resp = text(StatusCode::OK, "shared");
        resp.headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        assert!(
            seen.headers.get("viaduct-peer").is_none(),
            "the marker never reaches the origin"
        );
        resp
    })
    .await;
    let (nodes, addrs) = cluster(&origin, "0s").await;
    for round in 0..3 {
        for url in 0..60 {
            let node = (url * 7 + round) % 3;
            let got = fetch(addrs[node], at(&format!("/u/{url}"))).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.text(), "shared");
        }
    }
    let seen = origin.seen();
    for url in 0..60 {
        let target = format!("/u/{url}");
        let times = seen.iter().filter(|s| s.target == target).count();
        assert_eq!(times, 1, "{target}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}
