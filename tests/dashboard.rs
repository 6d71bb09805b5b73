//! The dashboard's Cache section: the page served by the admin listener
//! carries the search form and its script, and the admin API answers the
//! exact calls that script makes (list by tag and by prefix, inspect one
//! URL, purge a row's URL or a tag, hard or soft), with and without an
//! admin token, on a reverse route (where origins' tags are read). A
//! headless Chromium check runs only where /usr/bin/chromium exists.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::*;

async fn api(method: &str, admin: SocketAddr, path_and_query: &str, token: Option<&str>) -> Got {
    fetch(admin, admin_request(method, admin, path_and_query, token)).await
}

/// The JSON answer of a call that must succeed.
async fn api_json(
    method: &str,
    admin: SocketAddr,
    path_and_query: &str,
    token: Option<&str>,
) -> Value {
    let got = api(method, admin, path_and_query, token).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{method} {path_and_query}: {}",
        got.text()
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
    serde_json::from_slice(&got.body).unwrap()
}

/// An origin tagging its answers: /shop/a → `shop product-1`,
/// /shop/b → `shop product-2`, anything else → `other`; all for 10 minutes.
async fn tagging_origin() -> Origin {
    Origin::start(|seen| {
        let tags = match seen.target.as_str() {
            "/shop/a" => "shop product-1",
            "/shop/b" => "shop product-2",
            _ => "other",
        };
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("surrogate-key", tags)
            .body(TestBody::full(Bytes::from(format!(
                "body of {}",
                seen.target
            ))))
            .unwrap()
    })
    .await
}

/// Tags are read on reverse routes only (forward traffic's tags speak to
/// the origin's own CDN): a route named `site` for `site.test`.
fn reverse(origin: &Origin) -> viaduct::Config {
    let mut config = base_config();
    config.routes = vec![route_toml(&format!(
        "name = \"site\"\nhost = \"{HOST}\"\nupstream = \"http://{}\"\n",
        origin.addr
    ))];
    config
}

const HOST: &str = "site.test";

/// A GET of `path` on the reverse route.
fn site(path: &str) -> Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut().insert("host", HOST.parse().unwrap());
    req
}

/// A URL as the operator types it into the search box.
fn page_url(path: &str) -> String {
    format!("http://{HOST}{path}")
}

/// The URL the listing shows for `path` (the port spelled out, as in keys).
fn key_url(path: &str) -> String {
    format!("http://{HOST}:80{path}")
}

/// Fills the cache with /shop/a, /shop/b and /misc through the route.
async fn fill(proxy: SocketAddr, origin: &Origin) {
    for path in ["/shop/a", "/shop/b", "/misc"] {
        let got = fetch(proxy, site(path)).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("surrogate-key"), None, "tag fields are stripped");
    }
    let again = fetch(proxy, site("/shop/a")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(origin.count("/shop/a"), 1, "the second request was a hit");
}

fn urls(list: &Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries in {list}"))
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_page_carries_the_cache_search_and_builds_its_dom_without_html_strings() {
    let proxy = start(base_config()).await;
    let admin = proxy.admin_addr();
    let got = fetch(admin, get(&format!("http://{admin}/"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        got.header("content-security-policy"),
        Some("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
    );
    let page = got.text();

    // The form and the result elements the script uses, labelled.
    for id in ["cacheCard", "cacheSearch"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
    for id in [
        "cacheForm",
        "cacheQuery",
        "cacheTools",
        "cachePurgeTag",
        "cacheSoft",
        "cacheMsg",
        "cacheResults",
        "cacheRows",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no element #{id}");
        assert!(
            page.contains(&format!("$('{id}')")),
            "the script never uses #{id}"
        );
    }
    assert!(page.contains("<label class=\"flabel\" for=\"cacheQuery\">"));
    assert!(page.contains("<label class=\"check\" for=\"cacheSoft\">"));
    assert!(page.contains("role=\"search\""));
    assert!(page.contains("aria-live=\"polite\""));
    assert!(page.contains(">Search</button>"));
    assert!(page.contains(">Purge tag</button>"));
    for th in [
        "URL",
        "namespace",
        "status",
        "variants",
        "age",
        "TTL",
        "size",
        "tags",
    ] {
        assert!(page.contains(&format!(">{th}</th>")), "no column {th}");
    }

    // The admin calls, relative to the page like its ./stats poll, with
    // every value encoded, the page's token, and a confirmation first.
    for needle in [
        "'./cache?url=' + enc(c.value)",
        "'./cache/list?'",
        "'prefix='",
        "'tag='",
        "'&limit=' + LIST_LIMIT",
        "LIST_LIMIT = 200",
        "'./purge?' + selector + '=' + enc(value) + (soft ? '&soft=1' : '')",
        "purge('url', url)",
        "purge('tag', cacheShown.value)",
        "function enc(v) { return encodeURIComponent(v); }",
        "headers['Authorization'] = 'Bearer ' + tok",
        "window.confirm(",
        "needToken(!!tok)",
        "'purged ' + fmtInt(n)",
    ] {
        assert!(page.contains(needle), "the script lacks {needle:?}");
    }

    // Data goes into the DOM as text: no HTML parsing of strings anywhere,
    // no eval, no inline event handlers (the CSP forbids nothing of that
    // with 'unsafe-inline', so the page itself has to avoid them).
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setTimeout('",
        "javascript:",
    ] {
        assert!(!page.contains(banned), "the page uses {banned}");
    }
    let markup = page.split("<script>").next().unwrap().to_ascii_lowercase();
    for handler in [
        " onclick=",
        " onsubmit=",
        " onload=",
        " onerror=",
        " oninput=",
        " onchange=",
    ] {
        assert!(!markup.contains(handler), "inline handler {handler}");
    }
    // Nothing loaded from elsewhere (the CSP would block it anyway).
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(http",
    ] {
        assert!(!page.contains(external), "external resource {external}");
    }
    let script = page.split("<script>").nth(1).unwrap();
    let cache_js = &script[script
        .find("// ---- cache:")
        .expect("the cache section's script")..];
    assert!(cache_js.matches(".textContent").count() >= 3);
    assert!(cache_js.contains("document.createTextNode("));
    assert!(cache_js.contains("addEventListener('submit'"));
    assert!(cache_js.contains("addEventListener('click'"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_calls_the_page_makes_list_inspect_and_purge_by_url_and_tag() {
    let origin = tagging_origin().await;
    let proxy = start(reverse(&origin)).await;
    let admin = proxy.admin_addr();
    fill(proxy.addr(), &origin).await;
    let (a, b) = (key_url("/shop/a"), key_url("/shop/b"));

    // Tag search: what the page asks for "shop".
    let list = api_json("GET", admin, "/cache/list?tag=shop&limit=200", None).await;
    assert_eq!(urls(&list), [a.clone(), b.clone()], "{list}");
    assert_eq!(list["truncated"], false);
    let row = &list["entries"][0];
    assert_eq!(row["namespace"], "route:site");
    assert_eq!(row["key"], format!("route:site {a}"));
    assert_eq!(row["status"], 200);
    assert_eq!(row["variants"], 1);
    assert!(row["age"].as_u64().unwrap() < 60, "{row}");
    let ttl = row["ttl"].as_i64().unwrap();
    assert!(ttl > 500 && ttl <= 600, "{row}");
    assert!(row["size"].as_u64().unwrap() > 0, "{row}");
    let tags: Vec<&str> = row["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["shop", "product-1"]);
    let one = api_json("GET", admin, "/cache/list?tag=product-2&limit=200", None).await;
    assert_eq!(urls(&one), [b.as_str()]);
    let none = api_json(
        "GET",
        admin,
        &format!("/cache/list?tag={}&limit=200", query_value("no-such")),
        None,
    )
    .await;
    assert_eq!(urls(&none), Vec::<String>::new());
    assert_eq!(none["truncated"], false);
    // More than the limit: the page says the list is cut short.
    let cut = api_json("GET", admin, "/cache/list?tag=shop&limit=1", None).await;
    assert_eq!(cut["entries"].as_array().unwrap().len(), 1);
    assert_eq!(cut["truncated"], true);

    // Prefix search: "http://127.0.0.1:PORT/shop/*" → prefix without the *.
    let typed = format!("{}*", page_url("/shop/"));
    let prefix = typed.strip_suffix('*').unwrap();
    let list = api_json(
        "GET",
        admin,
        &format!("/cache/list?prefix={}&limit=200", query_value(prefix)),
        None,
    )
    .await;
    assert_eq!(urls(&list), [a.clone(), b.clone()], "{list}");
    let all = api_json(
        "GET",
        admin,
        &format!(
            "/cache/list?prefix={}&limit=200",
            query_value(&page_url("/"))
        ),
        None,
    )
    .await;
    assert_eq!(urls(&all).len(), 3, "{all}");
    // A prefix that is not an absolute URL: a 400 with a reason the page shows.
    let bad = api(
        "GET",
        admin,
        &format!("/cache/list?prefix={}&limit=200", query_value("/shop/")),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("not an absolute"), "{}", bad.text());

    // URL search: every variant with its facts and stored header fields.
    let inspect = api_json(
        "GET",
        admin,
        &format!("/cache?url={}", query_value(&page_url("/shop/a"))),
        None,
    )
    .await;
    assert_eq!(inspect["stored"], true, "{inspect}");
    assert_eq!(inspect["url"], page_url("/shop/a"));
    assert_eq!(
        inspect["keys"],
        serde_json::json!([format!("route:site {a}")])
    );
    let v = &inspect["variants"][0];
    assert_eq!(v["namespace"], "route:site");
    assert_eq!(v["status"], 200);
    assert_eq!(v["freshness_lifetime"], 600);
    assert_eq!(v["heuristic"], false);
    assert_eq!(v["body_bytes"], "body of /shop/a".len());
    assert_eq!(v["tags"], serde_json::json!(["shop", "product-1"]));
    assert!(v["ttl"].as_i64().unwrap() > 500);
    assert!(v["vary"].is_object() && v["headers"].is_object(), "{v}");
    let missing = api_json(
        "GET",
        admin,
        &format!("/cache?url={}", query_value(&page_url("/never"))),
        None,
    )
    .await;
    assert_eq!(missing["stored"], false);
    assert_eq!(missing["variants"], serde_json::json!([]));

    // Soft purge of the tag: both stay listed, stale (TTL not above zero).
    let soft = api_json("POST", admin, "/purge?tag=shop&soft=1", None).await;
    assert_eq!(
        soft,
        serde_json::json!({"selector": "tag", "target": ["shop"], "purged": 2, "soft": true})
    );
    let list = api_json("GET", admin, "/cache/list?tag=shop&limit=200", None).await;
    assert_eq!(urls(&list), [a.clone(), b.clone()]);
    for row in list["entries"].as_array().unwrap() {
        assert!(
            row["ttl"].as_i64().unwrap() <= 0,
            "soft-purged rows are stale: {row}"
        );
    }

    // Row purge: the URL exactly as the listing shows it.
    let row_url = list["entries"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(row_url, a);
    let purged = api_json(
        "POST",
        admin,
        &format!("/purge?url={}", query_value(&row_url)),
        None,
    )
    .await;
    assert_eq!(purged["selector"], "url");
    assert_eq!(purged["purged"], 1);
    assert_eq!(purged["soft"], false);
    let gone = api_json(
        "GET",
        admin,
        &format!("/cache?url={}", query_value(&row_url)),
        None,
    )
    .await;
    assert_eq!(gone["stored"], false, "{gone}");
    // Purging it again: 404, still JSON, purged 0 (the page says so).
    let again = api(
        "POST",
        admin,
        &format!("/purge?url={}", query_value(&row_url)),
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let again: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(again["purged"], 0);

    // "Purge tag" (hard): the rest of the tag goes, the untagged stays.
    let hard = api_json("POST", admin, "/purge?tag=shop", None).await;
    assert_eq!(
        hard,
        serde_json::json!({"selector": "tag", "target": ["shop"], "purged": 1, "soft": false})
    );
    let list = api_json("GET", admin, "/cache/list?tag=shop&limit=200", None).await;
    assert_eq!(urls(&list), Vec::<String>::new(), "{list}");
    let rest = api_json(
        "GET",
        admin,
        &format!(
            "/cache/list?prefix={}&limit=200",
            query_value(&page_url("/"))
        ),
        None,
    )
    .await;
    assert_eq!(urls(&rest), [key_url("/misc")]);
    // The next request for a purged URL goes to the origin again.
    fetch(proxy.addr(), site("/shop/a")).await;
    assert_eq!(origin.count("/shop/a"), 2);

    // A tag the purge refuses: 400 with a text reason the page shows.
    let bad = api(
        "POST",
        admin,
        &format!("/purge?tag={}", query_value("a b")),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        bad.text().contains("without spaces or commas"),
        "{}",
        bad.text()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_an_admin_token_every_call_the_page_makes_needs_it() {
    let origin = tagging_origin().await;
    let mut config = reverse(&origin);
    config.admin.token = Some("t".into());
    let proxy = start(config).await;
    let admin = proxy.admin_addr();
    fill(proxy.addr(), &origin).await;

    // The page itself stays open: it asks for the token.
    let page = fetch(admin, get(&format!("http://{admin}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("id=\"cacheForm\""));

    let inspect = format!("/cache?url={}", query_value(&page_url("/shop/a")));
    let by_prefix = format!(
        "/cache/list?prefix={}&limit=200",
        query_value(&page_url("/shop/"))
    );
    let purge_url = format!("/purge?url={}", query_value(&key_url("/shop/a")));
    let calls = [
        ("GET", "/cache/list?tag=shop&limit=200"),
        ("GET", by_prefix.as_str()),
        ("GET", inspect.as_str()),
        ("POST", purge_url.as_str()),
        ("POST", "/purge?tag=shop&soft=1"),
        ("POST", "/purge?tag=shop"),
    ];
    for (method, path) in calls {
        for token in [None, Some("wrong"), Some("T"), Some("")] {
            let got = api(method, admin, path, token).await;
            assert_eq!(
                got.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(got
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer"));
        }
    }
    // Nothing was purged by the refused calls.
    assert_eq!(proxy.cache().store.entry_count(), 3);

    let t = Some("t");
    let list = api_json("GET", admin, "/cache/list?tag=shop&limit=200", t).await;
    assert_eq!(urls(&list), [key_url("/shop/a"), key_url("/shop/b")]);
    let list = api_json("GET", admin, &by_prefix, t).await;
    assert_eq!(urls(&list).len(), 2);
    let inspect = api_json("GET", admin, &inspect, t).await;
    assert_eq!(inspect["stored"], true);
    let purged = api_json("POST", admin, &purge_url, t).await;
    assert_eq!(purged["purged"], 1);
    let soft = api_json("POST", admin, "/purge?tag=shop&soft=1", t).await;
    assert_eq!(soft["purged"], 1);
    assert_eq!(soft["soft"], true);
    let hard = api_json("POST", admin, "/purge?tag=shop", t).await;
    assert_eq!(hard["purged"], 1);
    let list = api_json("GET", admin, "/cache/list?tag=shop&limit=200", t).await;
    assert_eq!(urls(&list), Vec::<String>::new());
    assert_eq!(proxy.cache().store.entry_count(), 1);
    proxy.shutdown().await;
}

/// With a browser at hand: the page's script runs to its first poll (the
/// status pill says "live") with the Cache section in place. `--dump-dom`
/// cannot send a token, so this runs against a tokenless admin listener.
#[tokio::test]
async fn headless_chromium_runs_the_page_when_installed() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        eprintln!("skipped: no /usr/bin/chromium here");
        return;
    }
    let proxy = start(base_config()).await;
    let admin = proxy.admin_addr();
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("http://{admin}/"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("chromium within a minute")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("id=\"cacheForm\""), "{dom}");
    assert!(dom.contains("id=\"cacheQuery\""));
    assert!(
        dom.contains("<span id=\"statusText\">live</span>"),
        "the script did not reach its first poll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}
