//! `viaduct cache ls | show | purge`: the cache of a running proxy, through
//! its admin API (`GET /cache/list`, `GET /cache`, `POST /purge`) over plain
//! HTTP/1.1.
//!
//! Where: `--admin ADDR`, else `[admin] listen` of the configuration.
//! Credentials: `--token`, else `$VIADUCT_ADMIN_TOKEN`, else `[admin] token`.
//! Exit codes: 0 done; 1 the admin API answered an error, or the URL is not
//! in the cache; 2 bad usage or configuration, or the admin API cannot be
//! reached.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use viaduct::Config;

mod client;
mod print;

use client::{parse, path_with, AdminClient};
use http::{Method, StatusCode};
use print::{describe, out, out_raw, purged, table};

/// The environment variable that holds the admin token (safer than `--token`,
/// which other users of the machine can read in the process list).
const TOKEN_ENV: &str = "VIADUCT_ADMIN_TOKEN";
/// Connecting to the admin listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole exchange once connected (a purge by prefix walks the store).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
#[command(after_help = "\
The admin API is found at --admin, else at [admin] listen of the configuration
(-c FILE, default ./proxy.toml). The token is --token, else $VIADUCT_ADMIN_TOKEN,
else [admin] token of the configuration.

Examples:
  viaduct cache ls                                   every stored URL (first 100)
  viaduct cache ls --tag shoes --limit 1000          the URLs tagged `shoes`
  viaduct cache ls --prefix http://shop.test/img/ --route shop
  viaduct cache show http://shop.test/img/a.png      what is stored for one URL
  viaduct cache purge --tag shoes --tag boots        drop everything tagged shoes or boots
  viaduct cache purge --url http://shop.test/ --soft mark stale (revalidated on next use)
  viaduct -c /etc/viaduct/proxy.toml cache ls --json
  VIADUCT_ADMIN_TOKEN=... viaduct cache --admin 10.0.0.5:8081 ls

Exit status: 0 done; 1 the admin API answered an error, or the URL is not in
the cache; 2 bad usage or configuration, or the admin API cannot be reached.")]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,

    #[command(flatten)]
    target: Target,
}

/// Where to send the request, and which part of the cache it is about.
#[derive(Args, Debug)]
struct Target {
    /// The admin API's address, HOST:PORT [default: `[admin] listen` of the configuration].
    #[arg(long, value_name = "ADDR", global = true)]
    admin: Option<String>,

    /// The admin bearer token [default: $VIADUCT_ADMIN_TOKEN, then `[admin] token`].
    /// Prefer the environment variable: arguments show in the process list.
    #[arg(long, value_name = "TOKEN", global = true)]
    token: Option<String>,

    /// Only the cache of the reverse route named NAME.
    #[arg(long, value_name = "NAME", global = true, conflicts_with = "forward")]
    route: Option<String>,

    /// Only the forward proxy's cache.
    #[arg(long, global = true)]
    forward: bool,

    /// Print the admin API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// List the stored URLs: status, age, TTL, size, variants and tags.
    #[command(after_help = "\
Examples:
  viaduct cache ls
  viaduct cache ls --prefix http://shop.test/img/
  viaduct cache ls --tag product-42 --forward
  viaduct cache ls --limit 10000 --json")]
    Ls {
        /// Only URLs starting with this absolute URL (e.g. http://shop.test/img/).
        #[arg(long, value_name = "URL")]
        prefix: Option<String>,

        /// Only URLs tagged T (Surrogate-Key / Cache-Tag).
        #[arg(long, value_name = "T")]
        tag: Option<String>,

        /// At most N rows [default: the admin API's, 100; at most 10000].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
    },

    /// Show what is stored for one URL: its keys and every variant.
    #[command(after_help = "\
Examples:
  viaduct cache show http://shop.test/img/a.png
  viaduct cache show 'http://shop.test/search?q=boots&page=2' --route shop

Exit status 1 when nothing is stored for the URL.")]
    Show {
        /// The absolute URL, as a client would request it.
        #[arg(value_name = "URL")]
        url: String,
    },

    /// Remove (or, with --soft, mark stale) one URL, every URL under a prefix, or every URL with a tag.
    #[command(
        group(ArgGroup::new("selector").required(true).args(["url", "prefix", "tag"])),
        after_help = "\
Examples:
  viaduct cache purge --url http://shop.test/img/a.png
  viaduct cache purge --prefix http://shop.test/img/ --route shop
  viaduct cache purge --tag shoes --tag boots
  viaduct cache purge --tag shoes --soft

Exactly one kind of selector: --url, --prefix, or --tag (which may repeat).
Exit status 1 when --url names a URL that is not in the cache."
    )]
    Purge {
        /// One URL (all its variants).
        #[arg(long, value_name = "URL")]
        url: Option<String>,

        /// Every URL starting with this absolute URL.
        #[arg(long, value_name = "URL")]
        prefix: Option<String>,

        /// Every URL tagged T; repeat for several tags (any of them).
        #[arg(long, value_name = "T")]
        tag: Vec<String>,

        /// Mark stale instead of removing: served again only after revalidation
        /// (or as stale when the origin fails, if allowed).
        #[arg(long)]
        soft: bool,
    },
}

/// Why a command did not succeed, with its exit status.
enum Failure {
    /// The admin API answered, and said no (or the URL is not cached): 1.
    Answered(String),
    /// Usage, configuration, or the admin API out of reach: 2.
    Unusable(String),
}

/// Runs a `viaduct cache` command. `load` reads the configuration (only
/// called when it is needed); `explicit_config`: `-c` was given, so the file
/// must load even when the flags name everything.
pub fn run(
    args: &CacheArgs,
    explicit_config: bool,
    load: impl FnOnce() -> Result<Config, String>,
) -> ExitCode {
    let token_flag = args
        .target
        .token
        .clone()
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let config = if explicit_config || args.target.admin.is_none() || token_flag.is_none() {
        match load() {
            Ok(config) => Some(config),
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let addr = match &args.target.admin {
        Some(addr) => addr.clone(),
        // The loader always gives a configuration when asked (built-in
        // defaults without a file).
        None => config
            .as_ref()
            .map_or_else(String::new, |c| reachable(c.admin.listen).to_string()),
    };
    let token = token_flag.or_else(|| config.and_then(|c| c.admin.token));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let client = AdminClient { addr, token };
    match runtime.block_on(execute(args, &client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Answered(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Err(Failure::Unusable(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

/// An unspecified listen address (`0.0.0.0`, `[::]`) is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

async fn execute(args: &CacheArgs, client: &AdminClient) -> Result<(), Failure> {
    let target = &args.target;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(route) = &target.route {
        query.push(("route", route));
    }
    if target.forward {
        query.push(("mode", "forward"));
    }
    match &args.command {
        CacheCommand::Ls { prefix, tag, limit } => {
            let limit = limit.map(|n| n.to_string());
            query.extend(prefix.as_deref().map(|p| ("prefix", p)));
            query.extend(tag.as_deref().map(|t| ("tag", t)));
            query.extend(limit.as_deref().map(|n| ("limit", n)));
            let (status, body) = client
                .call(Method::GET, &path_with("/cache/list", &query))
                .await?;
            if status != StatusCode::OK {
                return Err(client.refusal(status, &body));
            }
            if target.json {
                return out_raw(&body);
            }
            out(&table(&parse(&body)?))
        }
        CacheCommand::Show { url } => {
            query.push(("url", url));
            let (status, body) = client
                .call(Method::GET, &path_with("/cache", &query))
                .await?;
            if status != StatusCode::OK {
                return Err(client.refusal(status, &body));
            }
            let answer = parse(&body)?;
            if target.json {
                out_raw(&body)?;
            }
            if answer["stored"] != Value::Bool(true) {
                return Err(Failure::Answered(format!("not in cache: {url}")));
            }
            if target.json {
                return Ok(());
            }
            out(&describe(&answer))
        }
        CacheCommand::Purge {
            url,
            prefix,
            tag,
            soft,
        } => {
            query.extend(url.as_deref().map(|u| ("url", u)));
            query.extend(prefix.as_deref().map(|p| ("prefix", p)));
            query.extend(tag.iter().map(|t| ("tag", t.as_str())));
            if *soft {
                query.push(("soft", "1"));
            }
            let (status, body) = client
                .call(Method::POST, &path_with("/purge", &query))
                .await?;
            if status == StatusCode::NOT_FOUND && url.is_some() && parse(&body).is_ok() {
                if target.json {
                    out_raw(&body)?;
                }
                let url = url.as_deref().unwrap_or_default();
                return Err(Failure::Answered(format!("not in cache: {url}")));
            }
            if status != StatusCode::OK {
                return Err(client.refusal(status, &body));
            }
            if target.json {
                return out_raw(&body);
            }
            out(&purged(&parse(&body)?, target))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_is_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8081".parse().unwrap()),
            "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("[::]:8081".parse().unwrap()),
            "[::1]:8081".parse::<SocketAddr>().unwrap()
        );
    }
}
