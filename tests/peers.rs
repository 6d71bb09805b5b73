//! Cache peers (`[cluster]`): every URL has one owner among the nodes; the
//! others fetch it through the owner, so the origin sees each URL once.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::Value;
use support::*;

/// Free ports for the nodes' listeners (the peers must know each other's
/// addresses before they start).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Three nodes `node0`..`node2` on 127.0.0.1, each a peer of the others,
/// with one catch-all route to `origin`.
async fn cluster(origin: &Origin, local_ttl: &str) -> (Vec<viaduct::Running>, Vec<SocketAddr>) {
    cluster_with(origin, local_ttl, "").await
}

/// `cluster`, with `extra` lines in each node's `[cluster]`.
async fn cluster_with(
    origin: &Origin,
    local_ttl: &str,
    extra: &str,
) -> (Vec<viaduct::Running>, Vec<SocketAddr>) {
    // A port freed by `free_addrs` can be taken by another test's
    // connection before its node binds it: then all three start again on
    // new ports.
    for attempt in 1.. {
        let addrs = free_addrs(3);
        match try_cluster(origin, local_ttl, extra, &addrs).await {
            Ok(nodes) => return (nodes, addrs),
            Err(e) if attempt < 5 && e.contains("Address already in use") => continue,
            Err(e) => panic!("proxy starts: {e}"),
        }
    }
    unreachable!()
}

/// The three nodes on `addrs`, or why one did not start (those started
/// are stopped).
async fn try_cluster(
    origin: &Origin,
    local_ttl: &str,
    extra: &str,
    addrs: &[SocketAddr],
) -> Result<Vec<viaduct::Running>, String> {
    let peers: Vec<String> = addrs.iter().map(|a| format!("\"http://{a}\"")).collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nname = \"node{i}\"\nshutdown_timeout = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[cluster]\npeers = [{}]\nself = \"http://{addr}\"\nlocal_ttl = \"{local_ttl}\"\n{extra}\n[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
            peers.join(", "),
            origin.addr
        );
        let config = viaduct::Config::from_toml(&text, "node.toml").unwrap();
        match viaduct::Proxy::start(config).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for node in nodes {
                    node.shutdown().await;
                }
                return Err(format!("{e:?}"));
            }
        }
    }
    Ok(nodes)
}

/// The proxy and admin addresses of each node, by index.
#[derive(Clone)]
struct Addrs {
    proxy: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
}

impl Addrs {
    fn of(nodes: &[viaduct::Running], proxy: &[SocketAddr]) -> Addrs {
        Addrs {
            proxy: proxy.to_vec(),
            admin: nodes.iter().map(|n| n.admin_addr()).collect(),
        }
    }

    fn index_of(&self, proxy: SocketAddr) -> usize {
        self.proxy
            .iter()
            .position(|a| *a == proxy)
            .unwrap_or_else(|| panic!("{proxy} is not a node"))
    }
}

/// What the origin answers for `target`: a body of its own per URL.
fn body_of(target: &str) -> String {
    format!("body of {target}")
}

fn answer(target: &str, max_age: u32) -> http::Response<TestBody> {
    let mut resp = http::Response::new(TestBody::full(Bytes::from(body_of(target))));
    resp.headers_mut().insert(
        "cache-control",
        format!("max-age={max_age}").parse().unwrap(),
    );
    resp
}

/// An origin answering every URL with its own body, fresh for an hour.
async fn origin_per_url() -> Origin {
    Origin::start(|seen| answer(&seen.target, 3600)).await
}

/// How many requests for exactly `target` the origin received.
fn times(seen: &[Seen], target: &str) -> usize {
    seen.iter().filter(|s| s.target == target).count()
}

/// The marker is between nodes only: the origin never receives it.
fn assert_no_marker(origin: &Origin) {
    for s in origin.seen() {
        assert!(
            s.headers.get("viaduct-peer").is_none(),
            "the marker reached the origin with {}",
            s.target
        );
    }
}

/// A deterministic pseudo-random sequence (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// One kept-alive client connection per address.
struct Clients(HashMap<SocketAddr, Client>);

impl Clients {
    fn new() -> Clients {
        Clients(HashMap::new())
    }

    async fn send(&mut self, addr: SocketAddr, req: http::Request<Full<Bytes>>) -> Got {
        if self.0.get(&addr).is_none_or(|c| c.is_closed()) {
            self.0.insert(addr, Client::connect(addr).await);
        }
        self.0.get_mut(&addr).unwrap().send(req).await
    }

    /// `GET /cache?url=http://site.test{path}` on the admin listener `admin`.
    async fn inspect(&mut self, admin: SocketAddr, path: &str) -> Value {
        let url = format!("http://{admin}/cache?url=http://site.test{path}");
        let got = self.send(admin, get(&url)).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        serde_json::from_slice(&got.body).unwrap()
    }

    /// `GET /stats` on the admin listener `admin`.
    async fn stats(&mut self, admin: SocketAddr) -> Value {
        let got = self
            .send(admin, get(&format!("http://{admin}/stats")))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        serde_json::from_slice(&got.body).unwrap()
    }

    /// A request for `path` at the node `addr`, which must answer it whole.
    async fn expect_ok(&mut self, addr: SocketAddr, path: &str) -> Got {
        let got = self.send(addr, at(path)).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{path} at {addr}: {}",
            got.text()
        );
        assert_eq!(got.text(), body_of(path), "{path} at {addr}");
        got
    }

    /// The owner of `path` (by index) as the first node that stores it
    /// names it, and whether the owner itself stores it.
    async fn owner_of(&mut self, addrs: &Addrs, path: &str) -> (usize, bool) {
        for (i, admin) in addrs.admin.iter().enumerate() {
            let inspected = self.inspect(*admin, path).await;
            if !is_stored(&inspected) {
                continue;
            }
            let owner = owner_in(&inspected).unwrap_or_else(|| panic!("no owner: {inspected}"));
            let owner = addrs.index_of(owner);
            if owner == i {
                return (owner, true);
            }
            let at_owner = self.inspect(addrs.admin[owner], path).await;
            if is_stored(&at_owner) {
                assert_eq!(
                    owner_in(&at_owner),
                    Some(addrs.proxy[owner]),
                    "{path}: the nodes agree on its owner"
                );
            }
            return (owner, is_stored(&at_owner));
        }
        panic!("{path} is stored nowhere");
    }
}

/// The owner named by an `/cache?url=` answer (there is one only when the
/// node stores the URL).
fn owner_in(inspected: &Value) -> Option<SocketAddr> {
    let owners = inspected["owners"].as_object()?;
    let mut all = owners
        .values()
        .map(|o| o.as_str().unwrap().parse().unwrap());
    let owner = all.next()?;
    assert!(all.all(|o| o == owner), "one route: {inspected}");
    Some(owner)
}

fn is_stored(inspected: &Value) -> bool {
    inspected["stored"] == Value::Bool(true)
}

/// The answering node's own member of `Cache-Status`: the last one (RFC
/// 9211 §2: the members of the caches before it, such as the owner, come
/// first, and a copy keeps the owner's).
fn own_status(got: &Got) -> String {
    let all = got.header("cache-status").expect("a Cache-Status field");
    all.rsplit(", ").next().unwrap().to_string()
}

/// Concurrent lanes for the many-URL tests; each URL stays in one lane, so
/// its own asks are one after another.
const LANES: usize = 4;

/// Asks `/u/{url}` at node `node` for each `(url, node)` of `asks`, each
/// answered 200 with that URL's body (URLs in `LANES` concurrent lanes,
/// each URL's asks in their order).
async fn ask_all(addrs: &Addrs, asks: &[(usize, usize)]) {
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let mine: Vec<(usize, usize)> = asks
            .iter()
            .filter(|(url, _)| url % LANES == lane)
            .copied()
            .collect();
        let addrs = addrs.clone();
        lanes.push(tokio::spawn(async move {
            let mut clients = Clients::new();
            for (url, node) in mine {
                clients
                    .expect_ok(addrs.proxy[node], &format!("/u/{url}"))
                    .await;
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
}

/// Requests `{prefix}{i}` at `node` for i = 0, 1, ... until one is owned by
/// another node; returns that path and its owner's index.
async fn not_owned_by(
    clients: &mut Clients,
    addrs: &Addrs,
    node: usize,
    prefix: &str,
) -> (String, usize) {
    for i in 0..40 {
        let path = format!("{prefix}{i}");
        clients.expect_ok(addrs.proxy[node], &path).await;
        let (owner, stores) = clients.owner_of(addrs, &path).await;
        assert!(stores, "{path}: its owner node{owner} stores it");
        if owner != node {
            return (path, owner);
        }
    }
    panic!("node{node} owns all of 40 URLs");
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

const URLS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_urls_asked_at_random_nodes_reach_the_origin_once_each() {
    let origin = origin_per_url().await;
    let (nodes, proxies) = cluster(&origin, "0s").await;
    let addrs = Addrs::of(&nodes, &proxies);
    // Each URL 2 or 3 times, each time at another node, in a shuffled order.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut asks: Vec<(usize, usize)> = Vec::new();
    for url in 0..URLS {
        let count = 2 + rng.below(2);
        let first = rng.below(3);
        let step = 1 + rng.below(2);
        asks.extend((0..count).map(|k| (url, (first + k * step) % 3)));
    }
    rng.shuffle(&mut asks);
    ask_all(&addrs, &asks).await;
    let seen = origin.seen();
    for url in 0..URLS {
        let target = format!("/u/{url}");
        assert_eq!(times(&seen, &target), 1, "{target}");
    }
    assert_eq!(seen.len(), URLS, "nothing else reached the origin");
    assert_no_marker(&origin);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_keys_and_only_its_keys_move_to_the_others() {
    let origin = origin_per_url().await;
    let (mut nodes, proxies) = cluster(&origin, "0s").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let asks: Vec<(usize, usize)> = (0..URLS).map(|url| (url, rng.below(3))).collect();
    ask_all(&addrs, &asks).await;
    // Who owns what (the owner stores every URL it was asked for).
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let addrs = addrs.clone();
        lanes.push(tokio::spawn(async move {
            let mut clients = Clients::new();
            let mut owners = Vec::new();
            for url in (lane..URLS).step_by(LANES) {
                let path = format!("/u/{url}");
                let (owner, stores) = clients.owner_of(&addrs, &path).await;
                assert!(stores, "{path}: its owner node{owner} stores it");
                owners.push((url, owner));
            }
            owners
        }));
    }
    let mut owner = vec![usize::MAX; URLS];
    for lane in lanes {
        for (url, node) in lane.await.unwrap() {
            owner[url] = node;
        }
    }
    for node in 0..3 {
        assert!(owner.contains(&node), "node{node} owns none of {URLS} URLs");
    }
    nodes.remove(2).shutdown().await;
    // Every URL again, at both remaining nodes, in a shuffled order.
    let mut asks: Vec<(usize, usize)> = (0..URLS)
        .flat_map(|url| {
            let first = rng.below(2);
            [(url, first), (url, 1 - first)]
        })
        .collect();
    rng.shuffle(&mut asks);
    ask_all(&addrs, &asks).await;
    let seen = origin.seen();
    let mut refetched = BTreeSet::new();
    for (url, owner) in owner.iter().enumerate() {
        let target = format!("/u/{url}");
        let n = times(&seen, &target);
        if n > 1 {
            refetched.insert(url);
        }
        let want = if *owner == 2 { 2 } else { 1 };
        assert_eq!(n, want, "{target} (owned by node{owner})");
    }
    let owned_by_stopped: BTreeSet<usize> = (0..URLS).filter(|u| owner[*u] == 2).collect();
    assert!(!owned_by_stopped.is_empty());
    assert_eq!(
        refetched, owned_by_stopped,
        "only the stopped node's keys move"
    );
    assert_no_marker(&origin);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn without_a_local_copy_each_ask_goes_to_the_owner() {
    let origin = origin_per_url().await;
    let (nodes, proxies) = cluster(&origin, "0s").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut clients = Clients::new();
    let (path, owner) = not_owned_by(&mut clients, &addrs, 0, "/a/").await;
    let hits = |stats: Value| stats["hits"].as_u64().unwrap();
    let before = hits(clients.stats(addrs.admin[owner]).await);
    let again = clients.expect_ok(addrs.proxy[0], &path).await;
    let status = own_status(&again);
    assert!(
        status.starts_with("node0;") && !status.contains("hit"),
        "node0 kept no copy to answer from: {status}"
    );
    let after = hits(clients.stats(addrs.admin[owner]).await);
    assert_eq!(after, before + 1, "the owner answered from its cache");
    assert_eq!(times(&origin.seen(), &path), 1);
    assert_no_marker(&origin);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_copy_revalidated_through_the_owner_still_lives_at_most_local_ttl() {
    let origin = origin_per_url().await;
    let (nodes, proxies) = cluster(&origin, "0s").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut clients = Clients::new();
    let (path, _) = not_owned_by(&mut clients, &addrs, 0, "/r/").await;
    // node0's copy is stale at once: the second ask revalidates it through
    // the owner, which answers from its own entry (fresh for an hour).
    let second = clients.expect_ok(addrs.proxy[0], &path).await;
    let status = own_status(&second);
    assert!(
        status.starts_with("node0;") && !status.contains("hit"),
        "{status}"
    );
    let copy = clients.inspect(addrs.admin[0], &path).await;
    let ttl = copy["variants"][0]["ttl"].as_i64().unwrap();
    assert!(ttl <= 0, "local_ttl 0s, yet node0's refreshed copy: {copy}");
    let third = clients.expect_ok(addrs.proxy[0], &path).await;
    let status = own_status(&third);
    assert!(
        status.starts_with("node0;") && !status.contains("hit"),
        "local_ttl 0s, yet node0 answered from its copy: {status}"
    );
    assert_eq!(times(&origin.seen(), &path), 1);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_local_copy_answers_without_the_owner() {
    let origin = origin_per_url().await;
    let (mut nodes, proxies) = cluster(&origin, "1h").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut clients = Clients::new();
    let (path, owner) = not_owned_by(&mut clients, &addrs, 0, "/b/").await;
    // The owner gone, node0's own copy answers.
    nodes.remove(owner).shutdown().await;
    let again = clients.expect_ok(addrs.proxy[0], &path).await;
    let status = own_status(&again);
    assert!(status.starts_with("node0; hit"), "{status}");
    // A hit carries only this node's member: what the owner did for the
    // fill is not true of it.
    let whole = again.header("cache-status").unwrap();
    assert_eq!(whole, status, "{whole}");
    assert_eq!(times(&origin.seen(), &path), 1);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_local_copy_lives_at_most_local_ttl_and_what_the_response_allows() {
    // /long/ is fresh for an hour, /short/ for 10 s; local_ttl is 30 s.
    let origin = Origin::start(|seen| {
        let max_age = if seen.target.starts_with("/short/") {
            10
        } else {
            3600
        };
        answer(&seen.target, max_age)
    })
    .await;
    let (nodes, proxies) = cluster(&origin, "30s").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut clients = Clients::new();
    let ttl = |inspected: &Value| inspected["variants"][0]["ttl"].as_i64().unwrap();
    let (long, owner) = not_owned_by(&mut clients, &addrs, 1, "/long/").await;
    let copy = clients.inspect(addrs.admin[1], &long).await;
    assert!((1..=30).contains(&ttl(&copy)), "node1's copy: {copy}");
    let owners = clients.inspect(addrs.admin[owner], &long).await;
    assert!(ttl(&owners) > 3000, "the owner's entry: {owners}");
    // A second ask within local_ttl is node1's own hit.
    let again = clients.expect_ok(addrs.proxy[1], &long).await;
    let status = own_status(&again);
    assert!(status.starts_with("node1; hit"), "{status}");
    let (short, _) = not_owned_by(&mut clients, &addrs, 1, "/short/").await;
    let copy = clients.inspect(addrs.admin[1], &short).await;
    assert!((1..=10).contains(&ttl(&copy)), "node1's copy: {copy}");
    assert_eq!(times(&origin.seen(), &long), 1);
    assert_eq!(times(&origin.seen(), &short), 1);
    for node in nodes {
        node.shutdown().await;
    }
}

/// One request on a connection from a client socket bound to `from`.
async fn send_from(from: SocketAddr, to: SocketAddr, req: http::Request<Full<Bytes>>) -> Got {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(from).unwrap();
    let stream = socket.connect(to).await.unwrap();
    Client::over(stream).await.send(req).await
}

#[tokio::test]
async fn the_marker_from_an_address_not_a_peers_means_nothing() {
    let origin = origin_per_url().await;
    // local_ttl 1h: node0 keeps its copy, so its /cache names the owner.
    let (nodes, proxies) = cluster(&origin, "1h").await;
    let addrs = Addrs::of(&nodes, &proxies);
    let mut clients = Clients::new();
    let mut checked = 0;
    for i in 0..12 {
        let path = format!("/m/{i}");
        let mut req = at(&path);
        req.headers_mut()
            .insert("viaduct-peer", "http".parse().unwrap());
        // Every node listens on 127.0.0.1: 127.0.0.2 is no peer.
        let client = SocketAddr::from(([127, 0, 0, 2], 0));
        let got = send_from(client, addrs.proxy[0], req).await;
        assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.text());
        assert_eq!(got.text(), body_of(&path));
        let (owner, stores) = clients.owner_of(&addrs, &path).await;
        if owner == 0 {
            continue;
        }
        checked += 1;
        assert!(
            stores,
            "{path}: node0 sent it on to its owner node{owner}, which stores it"
        );
        let seen = origin.seen();
        let at_origin: Vec<&Seen> = seen.iter().filter(|s| s.target == path).collect();
        assert_eq!(at_origin.len(), 1, "{path}");
        let via: Vec<&str> = at_origin[0]
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let via = via.join(", ");
        assert!(
            via.contains("node0") && via.contains(&format!("node{owner}")),
            "{path} went node0 → node{owner} → origin: Via {via}"
        );
    }
    assert!(checked > 0, "node0 owns all of 12 URLs");
    assert_no_marker(&origin);
    for node in nodes {
        node.shutdown().await;
    }
}

#[test]
fn cluster_configuration_is_checked() {
    let config = |cluster: &str| {
        viaduct::Config::from_toml(
            &format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[cluster]\n{cluster}"),
            "p.toml",
        )
    };
    let two = "peers = [\"http://127.0.0.1:8080\", \"http://127.0.0.1:8081\"]\n";
    let ok = config(&format!("{two}self = \"http://127.0.0.1:8081\"\n")).unwrap();
    assert_eq!(ok.cluster.peers.len(), 2);
    let fails = |cluster: String, line: usize, words: &[&str]| {
        let err = config(&cluster).expect_err(&cluster).to_string();
        let at = format!("p.toml:{line}:");
        assert!(err.starts_with(&at), "{cluster}: {err} (wanted {at})");
        for w in words {
            assert!(err.contains(w), "{cluster}: {err} (wanted {w:?})");
        }
    };
    // Peers without self: the error is at [cluster] (line 3).
    fails(two.to_string(), 3, &["self"]);
    // Self not among the peers.
    fails(
        format!("{two}self = \"http://127.0.0.1:9999\"\n"),
        5,
        &["self", "one of peers"],
    );
    // A peer named by a host name, not an address.
    let first = "peers = [\"http://127.0.0.1:8080\", ";
    let me = "self = \"http://127.0.0.1:8080\"\n";
    fails(
        format!("{first}\"http://node1:8080\"]\n{me}"),
        4,
        &["node1", "http://IP:port"],
    );
    // A peer without http://, or with another scheme.
    fails(
        format!("{first}\"127.0.0.1:8081\"]\n{me}"),
        4,
        &["127.0.0.1:8081", "http://IP:port"],
    );
    fails(
        format!("{first}\"https://127.0.0.1:8081\"]\n{me}"),
        4,
        &["https://127.0.0.1:8081"],
    );
    // Self by a name, or without http://.
    fails(
        format!("{two}self = \"http://localhost:8080\"\n"),
        5,
        &["localhost"],
    );
    fails(
        format!("{two}self = \"127.0.0.1:8080\"\n"),
        5,
        &["http://IP:port"],
    );
}

#[tokio::test]
async fn a_crowd_spread_over_three_nodes_on_a_cold_key_costs_one_request() {
    // Each node collapses its own crowd into one request; the non-owners'
    // requests meet the owner's crowd in the owner's flight.
    let origin = Origin::start_delayed(
        |seen| answer(&seen.target, 3600),
        |_| std::time::Duration::from_millis(300),
    )
    .await;
    let (nodes, addrs) = cluster(&origin, "10s").await;
    let mut crowd = Vec::new();
    for i in 0..100 {
        let node = addrs[i % 3];
        crowd.push(tokio::spawn(
            async move { fetch(node, at("/crowd/cold")).await },
        ));
    }
    for client in crowd {
        let got = client.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "body of /crowd/cold");
    }
    assert_eq!(times(&origin.seen(), "/crowd/cold"), 1);
    for node in nodes {
        node.shutdown().await;
    }
}

/// Whether `admin`'s node sees `peer` up, from `/stats`.
async fn sees_up(clients: &mut Clients, admin: SocketAddr, peer: SocketAddr) -> bool {
    let stats = clients.stats(admin).await;
    let peers = stats["peers"].as_array().unwrap().clone();
    let row = peers
        .iter()
        .find(|p| p["peer"] == peer.to_string())
        .expect("listed");
    row["up"].as_bool().unwrap()
}

#[tokio::test]
async fn health_checks_take_a_stopped_node_out_before_any_request_fails_on_it() {
    let origin = origin_per_url().await;
    let check = "health_check = { interval = \"100ms\", timeout = \"500ms\", rise = 2, fall = 2 }";
    let (mut nodes, addrs) = cluster_with(&origin, "10s", check).await;
    let admin0 = nodes[0].admin_addr();
    let mut clients = Clients::new();
    assert!(sees_up(&mut clients, admin0, addrs[2]).await);

    // Stopped: node 0 notices by itself, no client request involved.
    nodes.remove(2).shutdown().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while sees_up(&mut clients, admin0, addrs[2]).await {
        assert!(std::time::Instant::now() < deadline, "never seen down");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Its keys are already elsewhere: asking for them never tries it.
    for i in 0..30 {
        let path = format!("/checked/{i}");
        clients.expect_ok(addrs[0], &path).await;
    }
    let scrape = scrape(admin0).await;
    let tried = value(
        &scrape,
        "viaduct_cluster_peer_requests_total",
        &[("parent", &addrs[2].to_string()), ("outcome", "failed")],
    );
    assert_eq!(tried, 0.0, "a request went to the stopped node");

    // Back on its address: taken back in after `rise` passes.
    let text = format!(
        "[server]\nlisten = [\"{}\"]\nname = \"node2\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        addrs[2], origin.addr
    );
    let again = start(viaduct::Config::from_toml(&text, "node.toml").unwrap()).await;
    while !sees_up(&mut clients, admin0, addrs[2]).await {
        assert!(std::time::Instant::now() < deadline, "never seen up again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    again.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}
