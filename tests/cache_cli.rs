//! `viaduct cache ls | show | purge`: the real binary against the admin API
//! of a proxy started in-process, with an origin that tags its responses.

mod support;

use std::process::Command;

use bytes::Bytes;
use http::Response;
use support::*;
use viaduct::Running;

/// What a run of the binary printed, and how it exited.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// An empty directory to run the binary in: no ./proxy.toml to pick up.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("viaduct-cache-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `viaduct ARGS` (blocking, off the runtime, so the in-process proxy
/// keeps serving), with `env` set and no token inherited.
async fn viaduct_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_viaduct"));
    command
        .args(args)
        .current_dir(scratch("cwd"))
        .env_remove("VIADUCT_ADMIN_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn viaduct(args: &[&str]) -> Out {
    viaduct_env(args, &[]).await
}

/// A proxy with the route `shop` (host shop.test) in front of an origin that
/// says `max-age=3600` and tags `/shoes/...` with `shoes product` and
/// `/hats/...` with `hats`.
struct Shop {
    origin: Origin,
    proxy: Running,
    admin: String,
}

async fn shop(token: Option<&str>) -> Shop {
    let origin = Origin::start(|seen| {
        let tags = if seen.target.starts_with("/shoes/") {
            "shoes product"
        } else if seen.target.starts_with("/hats/") {
            "hats"
        } else {
            ""
        };
        let mut resp = Response::builder().header("cache-control", "max-age=3600");
        if !tags.is_empty() {
            resp = resp.header("surrogate-key", tags);
        }
        resp.body(TestBody::full(Bytes::from(format!(
            "body of {}",
            seen.target
        ))))
        .unwrap()
    })
    .await;
    let mut config = base_config();
    config.admin.token = token.map(String::from);
    config.routes.push(route_toml(&format!(
        "name = \"shop\"\nhost = \"shop.test\"\nupstream = \"http://{}\"\n",
        origin.addr
    )));
    let proxy = start(config).await;
    let admin = proxy.admin_addr().to_string();
    Shop {
        origin,
        proxy,
        admin,
    }
}

impl Shop {
    /// GET `path` on shop.test through the proxy.
    async fn get(&self, path: &str) -> Got {
        let mut req = get(path);
        req.headers_mut()
            .insert("host", "shop.test".parse().unwrap());
        let got = fetch(self.proxy.addr(), req).await;
        assert_eq!(got.status, 200, "{path}");
        got
    }

    /// Fetches each path twice: stored, then a hit.
    async fn fill(&self, paths: &[&str]) {
        for path in paths {
            self.get(path).await;
            self.get(path).await;
            assert_eq!(self.origin.count(path), 1, "{path} is stored");
        }
    }

    /// `viaduct cache ARGS --admin ADDR`.
    async fn cache(&self, args: &[&str]) -> Out {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin", &self.admin]);
        viaduct(&all).await
    }
}

const SHOES_1: &str = "http://shop.test:80/shoes/1";
const SHOES_2: &str = "http://shop.test:80/shoes/2";
const HATS_1: &str = "http://shop.test:80/hats/1";

#[tokio::test]
async fn ls_lists_the_urls_with_their_tags_and_filters() {
    let shop = shop(None).await;
    shop.fill(&["/shoes/1", "/shoes/2", "/hats/1"]).await;
    // One forward-proxy entry too, for the scoping flags.
    let forward_url = shop.origin.url("/fwd/1");
    fetch(shop.proxy.addr(), get(&forward_url)).await;

    let out = shop.cache(&["ls"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let header = out.stdout.lines().next().unwrap();
    for column in ["STATUS", "AGE", "TTL", "SIZE", "VARIANTS", "TAGS", "URL"] {
        assert!(header.contains(column), "{out:?}");
    }
    for url in [SHOES_1, SHOES_2, HATS_1] {
        let line = out.stdout.lines().find(|l| l.ends_with(url));
        let line = line.unwrap_or_else(|| panic!("{url} listed: {out:?}"));
        assert!(line.starts_with("200 "), "{out:?}");
        // Fresh for about an hour.
        assert!(line.contains("59m") || line.contains(" 1h "), "{out:?}");
        assert!(line.contains(" B ") || line.contains("KiB"), "{out:?}");
    }
    let shoes = out.stdout.lines().find(|l| l.ends_with(SHOES_1)).unwrap();
    assert!(shoes.contains("shoes,product"), "{out:?}");
    let hats = out.stdout.lines().find(|l| l.ends_with(HATS_1)).unwrap();
    assert!(hats.contains(" hats "), "{out:?}");
    assert!(out.stdout.ends_with("\n4 entries\n"), "{out:?}");

    let out = shop.cache(&["ls", "--tag", "shoes"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(SHOES_1) && out.stdout.contains(SHOES_2),
        "{out:?}"
    );
    assert!(!out.stdout.contains(HATS_1), "{out:?}");
    assert!(out.stdout.ends_with("\n2 entries\n"), "{out:?}");

    let out = shop
        .cache(&["ls", "--prefix", "http://shop.test/hats/"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(HATS_1), "{out:?}");
    assert!(out.stdout.ends_with("\n1 entry\n"), "{out:?}");

    let out = shop.cache(&["ls", "--limit", "1"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.ends_with("\n1 entry (more: use --limit)\n"),
        "{out:?}"
    );

    // Scoping: the route's part of the cache, or the forward proxy's.
    let out = shop.cache(&["ls", "--route", "shop"]).await;
    assert!(out.stdout.ends_with("\n3 entries\n"), "{out:?}");
    let out = shop.cache(&["ls", "--forward"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.ends_with("\n1 entry\n"), "{out:?}");
    assert!(out.stdout.contains("/fwd/1"), "{out:?}");
    let out = shop.cache(&["ls", "--route", "nope"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("400") && out.stderr.contains("no route named"),
        "{out:?}"
    );

    let out = shop.cache(&["ls", "--tag", "hats", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["truncated"], false);
    assert_eq!(json["entries"][0]["url"], HATS_1);
    assert_eq!(json["entries"][0]["tags"][0], "hats");
}

#[tokio::test]
async fn show_prints_the_keys_and_each_variant() {
    let shop = shop(None).await;
    // A query full of characters that must be encoded in the admin request.
    shop.fill(&["/shoes/1", "/shoes/q?a=1&b=x+y"]).await;

    let out = shop.cache(&["show", "http://shop.test/shoes/1"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let text = &out.stdout;
    assert!(
        text.starts_with("URL:  http://shop.test/shoes/1\n"),
        "{out:?}"
    );
    assert!(
        text.contains(&format!("Key:  route:shop {SHOES_1}\n")),
        "{out:?}"
    );
    assert!(text.contains("Variant 1 of 1 (route:shop)"), "{out:?}");
    assert!(text.contains("Status:   200"), "{out:?}");
    assert!(text.contains("Tags:     shoes, product"), "{out:?}");
    assert!(text.contains("(lifetime 1h)"), "{out:?}");
    assert!(text.contains("cache-control: max-age=3600"), "{out:?}");
    // Surrogate-Key is the proxy's, not stored for clients.
    assert!(!text.contains("surrogate-key"), "{out:?}");

    let out = shop
        .cache(&["show", "http://shop.test/shoes/q?a=1&b=x+y"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("Key:  route:shop http://shop.test:80/shoes/q?a=1&b=x+y\n"),
        "{out:?}"
    );

    let out = shop
        .cache(&["show", "http://shop.test/shoes/1", "--json"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["stored"], true);
    assert_eq!(json["variants"][0]["status"], 200);

    let out = shop.cache(&["show", "http://shop.test/shoes/none"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("not in cache: http://shop.test/shoes/none"),
        "{out:?}"
    );
    let out = shop
        .cache(&["show", "http://shop.test/shoes/1", "--forward"])
        .await;
    assert_eq!(out.code, Some(1), "{out:?}");
}

#[tokio::test]
async fn purge_by_tag_counts_and_the_entries_are_gone() {
    let shop = shop(None).await;
    shop.fill(&["/shoes/1", "/shoes/2", "/hats/1"]).await;

    let out = shop.cache(&["purge", "--tag", "shoes"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "purged 2 URLs by tag shoes\n", "{out:?}");

    let out = shop.cache(&["ls"]).await;
    assert!(out.stdout.ends_with("\n1 entry\n"), "{out:?}");
    assert!(
        out.stdout.contains(HATS_1) && !out.stdout.contains("/shoes/"),
        "{out:?}"
    );
    // The next request for a purged URL is a miss; the others still hit.
    shop.get("/shoes/1").await;
    assert_eq!(shop.origin.count("/shoes/1"), 2);
    shop.get("/hats/1").await;
    assert_eq!(shop.origin.count("/hats/1"), 1);

    let out = shop
        .cache(&[
            "purge", "--tag", "shoes", "--tag", "hats", "--route", "shop",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout, "purged 2 URLs by tags shoes, hats in route shop\n",
        "{out:?}"
    );
}

#[tokio::test]
async fn purge_one_url_soft_and_a_url_not_in_the_cache() {
    let shop = shop(None).await;
    shop.fill(&["/hats/1", "/hats/2"]).await;

    let out = shop
        .cache(&["purge", "--url", "http://shop.test/hats/1", "--soft"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("soft-purged 1 URL: {HATS_1}\n"),
        "{out:?}"
    );
    // Still listed, but stale.
    let out = shop.cache(&["ls"]).await;
    let line = out.stdout.lines().find(|l| l.ends_with(HATS_1)).unwrap();
    assert!(line.contains("(stale)"), "{out:?}");
    shop.get("/hats/1").await;
    assert_eq!(shop.origin.count("/hats/1"), 2, "revalidated");
    shop.get("/hats/2").await;
    assert_eq!(shop.origin.count("/hats/2"), 1);

    let out = shop
        .cache(&["purge", "--url", "http://shop.test/hats/none"])
        .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("not in cache: http://shop.test/hats/none"),
        "{out:?}"
    );

    let out = shop
        .cache(&["purge", "--prefix", "http://shop.test/hats/", "--json"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["selector"], "prefix");
    assert_eq!(json["purged"], 2);

    // A bad selector value: the admin API's one-line reason, exit 1.
    let out = shop.cache(&["purge", "--prefix", "/relative"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("400") && out.stderr.contains("not an absolute"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_admin_token_from_flag_environment_or_configuration() {
    let shop = shop(Some("s3cret")).await;
    shop.fill(&["/shoes/1"]).await;

    let out = shop.cache(&["ls"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("401") && out.stderr.contains("admin token required"),
        "{out:?}"
    );
    assert!(out.stderr.contains("--token"), "{out:?}");

    let out = shop.cache(&["ls", "--token", "s3cret"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(SHOES_1), "{out:?}");

    let out = shop.cache(&["ls", "--token", "wrong"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("refused"), "{out:?}");
    assert!(!out.stderr.contains("wrong"), "the token is never printed");

    let out = viaduct_env(
        &["cache", "ls", "--admin", &shop.admin],
        &[("VIADUCT_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");

    // Address and token from the configuration file alone.
    let path = scratch("token").join("proxy.toml");
    std::fs::write(
        &path,
        format!("[admin]\nlisten = \"{}\"\ntoken = \"s3cret\"\n", shop.admin),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let out = viaduct(&["-c", path, "cache", "purge", "--tag", "shoes"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "purged 1 URL by tag shoes\n", "{out:?}");
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    // -c after the subcommand too.
    let out = viaduct(&["cache", "ls", "-c", path]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.ends_with("0 entries\n"), "{out:?}");
}

#[tokio::test]
async fn usage_configuration_and_reachability_errors_exit_2() {
    let (_held, addr) = refusing_port();
    let addr = addr.to_string();
    let out = viaduct(&["cache", "ls", "--admin", &addr]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach the admin API at {addr}")),
        "{out:?}"
    );

    // No selector, two kinds of selector, --route with --forward.
    for args in [
        &["cache", "purge", "--admin", &addr][..],
        &["cache", "purge", "--url", "http://a.test/", "--tag", "t"],
        &["cache", "ls", "--route", "a", "--forward"],
        &["cache", "ls", "--limit", "0"],
        &["cache", "show"],
    ] {
        let out = viaduct(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }

    let out = viaduct(&["-c", "/nonexistent/proxy.toml", "cache", "ls"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/proxy.toml"), "{out:?}");

    let out = viaduct(&["cache", "--help"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("Examples") && out.stdout.contains("purge"),
        "{out:?}"
    );
}
