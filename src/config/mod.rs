//! The `proxy.toml` schema: every key, its default, and validation that reports
//! `file:line: message`.

mod cache;
mod cluster;
mod disk;
mod files;
mod group;
mod load;
mod shared;
mod units;

use std::net::SocketAddr;

use serde::Deserialize;

pub use cache::ParentUrl;
pub use cache::{
    CacheConfig, CacheKeyConfig, CookieName, FieldName, QueryGlob, SetCookie, StatusTtl,
};
pub use cluster::{ClusterConfig, PeerAddr, PeerCheckConfig};
pub use disk::DiskConfig;
pub use files::RedirectConfig;
pub use group::{Balance, GroupConfig, HealthCheckConfig, RouteUpstream, ServerSpec};
pub use load::ConfigError;
pub use shared::{redacted as redacted_redis_url, RedisUrls, SharedConfig, SharedMode};
pub use units::{Cidr, Dur, HostPattern, Size, UpstreamUrl};

/// The configuration shipped as `proxy.toml`; also what runs when no file exists.
pub const SHIPPED: &str = include_str!("../../proxy.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[[redirect]]`: rules applied before routing.
    #[serde(default, rename = "redirect")]
    pub redirects: Vec<RedirectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses the proxy port listens on; port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// Our pseudonym in `Via` and `Cache-Status`; also how loops are recognised.
    pub name: String,
    /// Client connections served at once; past it the listener stops accepting.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Dur,
    /// How long an idle persistent client connection is kept open.
    pub keepalive_timeout: Dur,
    /// Largest request head (request line + headers) accepted; larger gets 431.
    pub max_header_size: Size,
    /// Largest request body accepted; larger gets 413. 0 means no limit.
    pub max_request_body: Size,
    /// Time in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_timeout: Dur,
    /// Accept HTTP/2 with prior knowledge (h2c) on the proxy port.
    pub http2: bool,
    /// Answer TRACE (RFC 9110 §9.3.8); false refuses it with 405.
    pub trace: bool,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Keep `%2F`, `%5C` (and `\\`) in reverse-proxied paths instead of
    /// answering 400; a `.` or `..` between them is refused either way.
    pub allow_encoded_slash: bool,
    /// Send file bodies with `sendfile(2)` on plain HTTP/1.x connections
    /// (nginx's `sendfile`); off for file systems where it misbehaves.
    pub sendfile: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            name: "viaduct".into(),
            max_connections: 10_000,
            header_read_timeout: Dur(std::time::Duration::from_secs(10)),
            keepalive_timeout: Dur(std::time::Duration::from_secs(60)),
            max_header_size: Size(64 * 1024),
            max_request_body: Size(64 << 20),
            shutdown_timeout: Dur(std::time::Duration::from_secs(30)),
            http2: true,
            trace: true,
            allow_encoded_slash: false,
            sendfile: true,
            workers: 0,
        }
    }
}

/// `[tls]`: listeners that speak HTTPS (HTTP/1.1 and h2 by ALPN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// TLS ports; `[server] listen` stays plain HTTP.
    pub listen: Vec<SocketAddr>,
    /// Certificates, chosen by SNI; the first is the default.
    pub certificate: Vec<CertificateConfig>,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Dur,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: Vec::new(),
            certificate: Vec::new(),
            handshake_timeout: Dur(std::time::Duration::from_secs(10)),
        }
    }
}

/// One `[[tls.certificate]]`. Relative paths are relative to the
/// configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, RSA or EC).
    pub key: std::path::PathBuf,
    /// Host names SNI selects this certificate for (`*.example.com` allowed);
    /// default: the DNS names in the certificate.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin listener (metrics, stats, health) binds.
    pub listen: SocketAddr,
    /// When set, every admin request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Serve absolute-form (`GET http://host/path`) requests as a forward proxy.
    pub enabled: bool,
    /// Client networks allowed to use the forward proxy. Never an open proxy:
    /// the default is loopback only.
    pub allow_clients: Vec<Cidr>,
    /// Ports CONNECT may reach (HTTPS by default).
    pub connect_ports: Vec<u16>,
    /// A tunnel with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: Dur,
    /// Destinations the forward proxy refuses (checked on resolved addresses):
    /// networks (`"10.0.0.0/8"`) and host names (`"metadata.internal"`,
    /// `"*.corp"`). The admin listener is always refused.
    pub deny_destinations: Vec<Destination>,
    /// Let forward traffic reach loopback (127.0.0.0/8, ::1). Off by default,
    /// like Squid's `to_localhost` deny: services on the proxy host that trust
    /// local callers must not become reachable by every proxy client. The
    /// proxy's own listeners stay refused either way.
    pub allow_loopback: bool,
    /// Proxy authentication (RFC 7617 Basic) for forward requests and CONNECT.
    pub auth: Option<AuthConfig>,
    /// The PAC file at `/proxy.pac` and `/wpad.dat`.
    pub pac: PacConfig,
    /// Parent proxies (`http://[user:password@]host:port`): forward requests
    /// this cache does not answer, and CONNECT tunnels, go through the first
    /// one that is up (a cache hierarchy).
    pub parent: Vec<ParentUrl>,
    /// With parents: never go direct, even when every parent is down (502).
    pub never_direct: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            enabled: true,
            allow_clients: vec![
                "127.0.0.0/8".parse().expect("valid literal"),
                "::1/128".parse().expect("valid literal"),
            ],
            connect_ports: vec![443],
            tunnel_idle_timeout: Dur(std::time::Duration::from_secs(300)),
            deny_destinations: vec![
                "169.254.0.0/16".parse().expect("valid literal"),
                "fe80::/10".parse().expect("valid literal"),
            ],
            allow_loopback: false,
            auth: None,
            parent: Vec::new(),
            never_direct: false,
            pac: PacConfig::default(),
        }
    }
}

/// A destination the forward proxy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Network(Cidr),
    Host(HostPattern),
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<Cidr>() {
            return Ok(Destination::Network(net));
        }
        s.parse::<HostPattern>()
            .map(Destination::Host)
            .map_err(|_| {
                format!(
                    "{s:?} is neither a network (\"10.0.0.0/8\") nor a host name (\"*.internal\")"
                )
            })
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Shown by browsers in the login prompt.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// User name → bcrypt hash (make one with `viaduct hash-password`).
    pub users: std::collections::BTreeMap<String, String>,
}

fn default_realm() -> String {
    "viaduct".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacConfig {
    pub enabled: bool,
    /// `host:port` the PAC file names; by default the address the client used.
    pub proxy: Option<String>,
    /// Extra hosts that go DIRECT: patterns (`"*.corp"`) or IPv4 networks.
    /// Plain host names and loopback always go DIRECT.
    pub bypass: Vec<String>,
}

impl Default for PacConfig {
    fn default() -> Self {
        PacConfig {
            enabled: true,
            proxy: None,
            bypass: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Time to establish a TCP connection to an origin (→ 504 when exceeded).
    pub connect_timeout: Dur,
    /// Time from sending the request to receiving the response head (→ 504).
    pub response_header_timeout: Dur,
    /// Longest silence inside a response body before it is ended as an error
    /// (the client sees a truncated response; nothing is stored).
    pub body_idle_timeout: Dur,
    /// How long an idle pooled origin connection is kept for reuse.
    pub idle_timeout: Dur,
    /// Idle connections kept per origin.
    pub max_idle_per_host: usize,
    /// Requests in flight to one origin at once (so connections open to it);
    /// further requests wait for a free slot within `response_header_timeout`.
    pub max_connections_per_host: usize,
    /// A PEM file of CAs every `https://` origin may be signed by, besides the
    /// public roots (a company CA, say).
    pub tls_ca: Option<std::path::PathBuf>,
    /// `[[upstream.group]]`: named groups of origin servers.
    #[serde(rename = "group")]
    pub groups: Vec<GroupConfig>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Dur(std::time::Duration::from_secs(5)),
            response_header_timeout: Dur(std::time::Duration::from_secs(60)),
            body_idle_timeout: Dur(std::time::Duration::from_secs(30)),
            idle_timeout: Dur(std::time::Duration::from_secs(90)),
            max_idle_per_host: 64,
            max_connections_per_host: 512,
            tls_ca: None,
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Diagnostic log filter (tracing syntax); `RUST_LOG` overrides it.
    pub level: String,
    /// Access log destination: `"stdout"`, `"stderr"`, `"off"`, or a file path.
    pub access: String,
    /// Access log line format.
    pub format: AccessFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            access: "stdout".into(),
            format: AccessFormat::Combined,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// Apache/nginx combined log format plus duration, upstream status and
    /// time, and cache status.
    Combined,
    /// One JSON object per line.
    Json,
    /// Squid's native format with TCP_HIT / TCP_MISS / ... codes.
    Squid,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A short label for logs (defaults to `host` + `path_prefix`).
    #[serde(default)]
    pub name: Option<String>,
    /// Exact host, `*.example.com`, or `*`.
    pub host: HostPattern,
    /// Path prefix this route serves; the longest matching prefix wins.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// The origin: `http://host[:port]`, `https://host[:port]`, or the name of
    /// an `[[upstream.group]]`. A route has this or `root`.
    #[serde(default)]
    pub upstream: Option<RouteUpstream>,
    /// Serve files from this directory instead of proxying: the route's
    /// `path_prefix` is stripped from the path, the rest joined to it.
    #[serde(default)]
    pub root: Option<std::path::PathBuf>,
    /// Files tried, in order, for a directory request (`root` routes).
    #[serde(default = "default_index")]
    pub index: Vec<String>,
    /// A listing (HTML, or JSON by `Accept`) of a directory without an index.
    #[serde(default)]
    pub listing: bool,
    /// `Cache-Control` sent with files.
    #[serde(default)]
    pub cache_control: Option<String>,
    /// Content types by file extension, over the built-in table.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, String>,
    /// Only clients in these networks (any when empty); others get 403.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// HTTP Basic authentication (401 with `WWW-Authenticate`), with
    /// bcrypt hashes as in `[forward.auth]`.
    #[serde(default)]
    pub basic_auth: Option<AuthConfig>,
    /// Send the client's `Host` to the origin (true) or the upstream's (false).
    #[serde(default = "default_true")]
    pub preserve_host: bool,
    /// Which client-address headers to add on the way to the origin.
    #[serde(default)]
    pub forwarded: ForwardedHeaders,
    /// Answer plain-HTTP requests with 308 to the same URL over https.
    #[serde(default)]
    pub https_redirect: bool,
    /// A PEM file of CAs to trust for this `https://` upstream, besides the
    /// public roots (and `[upstream] tls_ca`).
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Verify the `https://` upstream's certificate (false: encrypted, not
    /// authenticated; warned about at start).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// The protocol offered to an `https://` upstream by ALPN.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// Targeted cache-control fields (RFC 9213) for this route, replacing
    /// `[cache] targeted_fields`; `[]` turns targeting off here.
    #[serde(default)]
    pub targeted_fields: Option<Vec<FieldName>>,
    /// How this route's requests are keyed in the cache.
    #[serde(default)]
    pub cache_key: CacheKeyConfig,
    /// Lifetime of responses without explicit freshness, instead of the
    /// heuristic (RFC 9111 §4.2.2).
    #[serde(default)]
    pub default_ttl: Option<Dur>,
    /// Lifetime by status for responses without explicit freshness
    /// (negative caching: `{ 404 = "30s" }`).
    #[serde(default)]
    pub status_ttl: StatusTtl,
    /// A client's `no-cache` (or `Pragma: no-cache`, or `max-age`) does not
    /// make this route refetch or revalidate.
    #[serde(default)]
    pub ignore_client_no_cache: bool,
}

/// `upstream_protocol`: what a route offers its `https://` origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// h2 when the origin offers it, else HTTP/1.1.
    #[default]
    Auto,
    Http1,
    Http2,
}

fn default_prefix() -> String {
    "/".into()
}

fn default_index() -> Vec<String> {
    vec!["index.html".into()]
}

fn default_true() -> bool {
    true
}

/// Client-address headers added on reverse routes (RFC 7239 and the de facto
/// `X-Forwarded-*` family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` (appended), `X-Forwarded-Host`, `X-Forwarded-Proto`.
    #[default]
    XForwarded,
    /// RFC 7239 `Forwarded: for=...;host=...;proto=http` (appended).
    Forwarded,
    /// Both of the above.
    Both,
    /// Neither.
    None,
}

impl Config {
    /// The configuration used when no file is given and `./proxy.toml` does not exist.
    pub fn builtin() -> Config {
        Config::from_toml(SHIPPED, "<built-in proxy.toml>")
            .expect("the shipped proxy.toml is valid")
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        load::parse(text, origin)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        load::read(path)
    }
}
