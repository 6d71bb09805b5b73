//! `[[upstream.group]]`: named groups of origin servers with their balancing,
//! passive and active health settings, and what a route's `upstream` names
//! (a URL or a group).

use serde::Deserialize;

use super::{Dur, UpstreamConfig, UpstreamUrl};

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpstream {
    Url(UpstreamUrl),
    /// The name of an `[[upstream.group]]`.
    Group(String),
}

impl RouteUpstream {
    /// The URL, for a route with one origin.
    pub fn url(&self) -> Option<&UpstreamUrl> {
        match self {
            RouteUpstream::Url(url) => Some(url),
            RouteUpstream::Group(_) => None,
        }
    }
}

impl std::fmt::Display for RouteUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteUpstream::Url(url) => url.fmt(f),
            RouteUpstream::Group(name) => write!(f, "group {name}"),
        }
    }
}

/// `[[upstream.group]]`: several origin servers behind one name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    /// `"http://10.0.0.1:8000"`, with ` weight=N` and/or ` backup` after it.
    pub servers: Vec<ServerSpec>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive marking: this many failures (connect errors, timeouts, 502–504)
    /// within `fail_timeout` mark a server down for `fail_timeout`.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// Overrides of the `[upstream]` keys of the same name, for this group.
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    #[serde(default)]
    pub response_header_timeout: Option<Dur>,
    #[serde(default)]
    pub body_idle_timeout: Option<Dur>,
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    #[serde(default)]
    pub max_idle_per_host: Option<usize>,
    #[serde(default)]
    pub max_connections_per_host: Option<usize>,
}

impl GroupConfig {
    /// The `[upstream]` settings with this group's overrides, or `None` when
    /// it overrides nothing (it then shares the routes' pool).
    pub fn pool_settings(&self, defaults: &UpstreamConfig) -> Option<UpstreamConfig> {
        let overrides = self.connect_timeout.is_some()
            || self.response_header_timeout.is_some()
            || self.body_idle_timeout.is_some()
            || self.idle_timeout.is_some()
            || self.max_idle_per_host.is_some()
            || self.max_connections_per_host.is_some();
        if !overrides {
            return None;
        }
        let mut settings = defaults.clone();
        settings.groups.clear();
        if let Some(d) = self.connect_timeout {
            settings.connect_timeout = d;
        }
        if let Some(d) = self.response_header_timeout {
            settings.response_header_timeout = d;
        }
        if let Some(d) = self.body_idle_timeout {
            settings.body_idle_timeout = d;
        }
        if let Some(d) = self.idle_timeout {
            settings.idle_timeout = d;
        }
        if let Some(n) = self.max_idle_per_host {
            settings.max_idle_per_host = n;
        }
        if let Some(n) = self.max_connections_per_host {
            settings.max_connections_per_host = n;
        }
        Some(settings)
    }
}

fn default_max_fails() -> u32 {
    3
}

fn default_fail_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

/// One server of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub url: UpstreamUrl,
    /// Share of the traffic, relative to the other servers (at least 1).
    pub weight: u32,
    /// Used only when every other server is down.
    pub backup: bool,
}

/// How a group spreads requests over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn, by weight.
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight (relative to its weight).
    LeastConn,
    /// By the cache key: each URL stays on one server.
    ConsistentHash,
}

/// `health_check = { path = "/healthz", ... }`: active checks per server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: String,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_expect")]
    pub expect: u16,
    /// Consecutive passes that bring a down server back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_check_interval() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

fn default_check_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}

fn default_expect() -> u16 {
    200
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}
