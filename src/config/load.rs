//! Reading `proxy.toml`: TOML syntax and schema errors from serde (with the key's
//! path and span), then the checks that span several keys.

use std::fmt;
use std::path::Path;

use super::Config;

/// A configuration problem, shown as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.origin, line, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn read(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        line: None,
        message: format!("cannot read the configuration: {e}"),
    })?;
    let mut config = parse(&text, &origin)?;
    // Certificate paths are relative to the configuration file, not to
    // wherever the proxy happens to be started.
    if let Some(dir) = path.parent() {
        let files = config
            .tls
            .certificate
            .iter_mut()
            .flat_map(|entry| [&mut entry.cert, &mut entry.key])
            .chain(config.upstream.tls_ca.as_mut())
            .chain(config.routes.iter_mut().filter_map(|r| r.tls_ca.as_mut()));
        for file in files {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
    Ok(config)
}

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let error = |line: Option<usize>, message: String| ConfigError {
        origin: origin.to_string(),
        line,
        message,
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| error(line_at(text, e.span()), e.message().trim().to_string()))?;
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = inner.message().trim();
        let message = if path.is_empty() || path == "." {
            message.to_string()
        } else {
            format!("key `{path}`: {message}")
        };
        error(line_at(text, inner.span()), message)
    })?;
    validate(&config).map_err(|(table, key, message)| {
        error(
            line_of_key(text, table, key),
            format!("key `{}`: {message}", dotted(table, key)),
        )
    })?;
    Ok(config)
}

/// A table name and an index for `[[route]]` entries.
type Table = (&'static str, Option<usize>);

fn dotted(table: Table, key: &str) -> String {
    match table {
        (name, Some(i)) => format!("{name}[{i}].{key}"),
        (name, None) => format!("{name}.{key}"),
    }
}

/// Checks serde cannot express on one value.
fn validate(c: &Config) -> Result<(), (Table, &'static str, String)> {
    let server = ("server", None);
    if c.server.listen.is_empty() {
        return Err((
            server,
            "listen",
            "at least one listen address is required".into(),
        ));
    }
    if c.server.name.is_empty() || !c.server.name.bytes().all(is_tchar) {
        return Err((
            server,
            "name",
            format!(
                "{:?} is not a valid Via pseudonym: use a token (letters, digits, - . _ and !#$%&'*+^`|~)",
                c.server.name
            ),
        ));
    }
    if c.server.max_connections == 0 || c.server.max_connections > 1 << 24 {
        return Err((
            server,
            "max_connections",
            "must be between 1 and 16777216".into(),
        ));
    }
    if c.server.max_header_size.bytes() < 8192 {
        return Err((server, "max_header_size", "must be at least 8KiB".into()));
    }
    if c.server.header_read_timeout.get().is_zero() || c.server.keepalive_timeout.get().is_zero() {
        let key = if c.server.header_read_timeout.get().is_zero() {
            "header_read_timeout"
        } else {
            "keepalive_timeout"
        };
        return Err((server, key, "must be greater than zero".into()));
    }
    let mut names = std::collections::HashSet::new();
    for (i, group) in c.upstream.groups.iter().enumerate() {
        let at = ("upstream.group", Some(i));
        if !names.insert(group.name.as_str()) {
            return Err((
                at,
                "name",
                format!("group {:?} is defined twice", group.name),
            ));
        }
        if group.servers.is_empty() {
            return Err((at, "servers", "a group needs at least one server".into()));
        }
        if group.servers.len() > 64 {
            return Err((at, "servers", "a group has at most 64 servers".into()));
        }
        if group.servers.iter().all(|s| s.backup) {
            return Err((
                at,
                "servers",
                "a group needs a server that is not a backup".into(),
            ));
        }
        let zero = [
            ("connect_timeout", group.connect_timeout),
            ("response_header_timeout", group.response_header_timeout),
            ("body_idle_timeout", group.body_idle_timeout),
            ("idle_timeout", group.idle_timeout),
        ]
        .into_iter()
        .find(|(_, d)| d.is_some_and(|d| d.get().is_zero()));
        if let Some((key, _)) = zero {
            return Err((at, key, "must be greater than zero".into()));
        }
        if group.max_connections_per_host == Some(0) {
            return Err((at, "max_connections_per_host", "must be at least 1".into()));
        }
        if group.max_fails == 0 || group.fail_timeout.get().is_zero() {
            let key = if group.max_fails == 0 {
                "max_fails"
            } else {
                "fail_timeout"
            };
            return Err((at, key, "must be greater than zero".into()));
        }
        if let Some(check) = &group.health_check {
            if !check.path.starts_with('/') {
                return Err((
                    at,
                    "health_check",
                    format!("path {:?} must start with /", check.path),
                ));
            }
            if check.interval.get().is_zero()
                || check.timeout.get().is_zero()
                || check.rise == 0
                || check.fall == 0
            {
                return Err((
                    at,
                    "health_check",
                    "interval, timeout, rise and fall must be greater than zero".into(),
                ));
            }
            if !(100..=599).contains(&check.expect) {
                return Err((
                    at,
                    "health_check",
                    format!("expect {} is not an HTTP status", check.expect),
                ));
            }
        }
    }
    for (i, route) in c.routes.iter().enumerate() {
        let at = ("route", Some(i));
        let upstream = match (&route.upstream, &route.root) {
            (Some(upstream), None) => upstream,
            (None, Some(root)) => {
                super::files::check_route(route, root).map_err(|(key, why)| (at, key, why))?;
                continue;
            }
            (Some(_), Some(_)) => {
                return Err((at, "root", "a route has upstream or root, not both".into()))
            }
            (None, None) => {
                return Err((
                    at,
                    "upstream",
                    "name an upstream (http://host:port or a group) or a root directory".into(),
                ))
            }
        };
        let url = match upstream {
            crate::config::RouteUpstream::Url(url) => url,
            crate::config::RouteUpstream::Group(name) => {
                if !names.contains(name.as_str()) {
                    return Err((
                        at,
                        "upstream",
                        format!("no [[upstream.group]] is named {name:?}"),
                    ));
                }
                if route.tls_ca.is_some() {
                    return Err((
                        at,
                        "tls_ca",
                        "applies to https:// upstreams only (set it in [upstream] for a group)"
                            .into(),
                    ));
                }
                continue;
            }
        };
        if !url.tls {
            if route.tls_ca.is_some() {
                return Err((at, "tls_ca", "applies to https:// upstreams only".into()));
            }
            if !route.tls_verify {
                return Err((
                    at,
                    "tls_verify",
                    "applies to https:// upstreams only".into(),
                ));
            }
        }
    }
    let tls = ("tls", None);
    if !c.tls.listen.is_empty() && c.tls.certificate.is_empty() {
        return Err((
            tls,
            "listen",
            "TLS listeners need at least one [[tls.certificate]]".into(),
        ));
    }
    if c.tls.handshake_timeout.get().is_zero() {
        return Err((tls, "handshake_timeout", "must be greater than zero".into()));
    }
    // Port 0 (any free port) never collides.
    let fixed = |a: &&std::net::SocketAddr| a.port() != 0;
    if let Some(addr) = c
        .tls
        .listen
        .iter()
        .filter(fixed)
        .find(|a| c.server.listen.contains(a))
    {
        return Err((
            tls,
            "listen",
            format!("{addr} is also in [server] listen; a port speaks either plain HTTP or TLS"),
        ));
    }
    if c.cache.max_object_size > c.cache.capacity {
        return Err((
            ("cache", None),
            "max_object_size",
            format!(
                "{} is larger than the cache capacity {}",
                c.cache.max_object_size, c.cache.capacity
            ),
        ));
    }
    if let Some(disk) = &c.cache.disk {
        if let Err(message) = disk.check() {
            let key = if message.contains("capacity must") {
                "capacity"
            } else {
                "max_object_size"
            };
            return Err((("cache.disk", None), key, message));
        }
    }
    if !(0.0..=1.0).contains(&c.cache.heuristic_fraction) {
        return Err((
            ("cache", None),
            "heuristic_fraction",
            "must be between 0 and 1".into(),
        ));
    }
    if c.cache.max_variants == 0 {
        return Err((("cache", None), "max_variants", "must be at least 1".into()));
    }
    if c.cache.max_tags_per_object > 1024 {
        return Err((
            ("cache", None),
            "max_tags_per_object",
            "must be at most 1024 (0 keeps no tags)".into(),
        ));
    }
    if !c.cluster.peers.is_empty() {
        match c.cluster.self_addr {
            Some(me) if c.cluster.peers.contains(&me) => {}
            Some(_) => return Err((("cluster", None), "self", "must be one of peers".into())),
            None => {
                return Err((
                    ("cluster", None),
                    "self",
                    "name this node's own entry of peers".into(),
                ))
            }
        }
    }
    let slice = c.cache.slice_size.bytes();
    if slice != 0 && (slice < 512 || slice > c.cache.capacity.bytes()) {
        return Err((
            ("cache", None),
            "slice_size",
            "must be 0 (off), or at least 512 bytes and no more than the capacity".into(),
        ));
    }
    if let Some(auth) = &c.forward.auth {
        if auth.users.is_empty() {
            return Err((
                ("forward.auth", None),
                "users",
                "at least one user is required".into(),
            ));
        }
        for (name, hash) in &auth.users {
            if name.contains(':') {
                return Err((
                    ("forward.auth", None),
                    "users",
                    format!("user name {name:?} must not contain ':'"),
                ));
            }
            if !hash.starts_with("$2") {
                return Err((
                    ("forward.auth", None),
                    "users",
                    format!("the password of {name:?} must be a bcrypt hash: make one with `viaduct hash-password`"),
                ));
            }
        }
    }
    let upstream = ("upstream", None);
    for (key, value) in [
        ("connect_timeout", c.upstream.connect_timeout),
        (
            "response_header_timeout",
            c.upstream.response_header_timeout,
        ),
        ("idle_timeout", c.upstream.idle_timeout),
        ("body_idle_timeout", c.upstream.body_idle_timeout),
    ] {
        if value.get().is_zero() {
            return Err((upstream, key, "must be greater than zero".into()));
        }
    }
    if c.upstream.max_connections_per_host == 0 {
        return Err((
            ("upstream", None),
            "max_connections_per_host",
            "must be at least 1".into(),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        return Err((
            ("log", None),
            "level",
            format!("invalid filter {:?}: {e}", c.log.level),
        ));
    }
    if c.log.access.trim().is_empty() {
        return Err((
            ("log", None),
            "access",
            "use \"stdout\", \"stderr\", \"off\" or a file path".into(),
        ));
    }
    for (i, redirect) in c.redirects.iter().enumerate() {
        super::files::check_redirect(redirect)
            .map_err(|(key, why)| (("redirect", Some(i)), key, why))?;
    }
    for (i, route) in c.routes.iter().enumerate() {
        if !route.path_prefix.starts_with('/') {
            return Err((
                ("route", Some(i)),
                "path_prefix",
                format!("{:?} must start with \"/\"", route.path_prefix),
            ));
        }
        let earlier = c.routes[..i]
            .iter()
            .position(|r| r.host == route.host && r.path_prefix == route.path_prefix);
        if let Some(j) = earlier {
            return Err((
                ("route", Some(i)),
                "path_prefix",
                format!(
                    "{:?} duplicates route[{j}] (same host and path_prefix); it could never be used",
                    route.path_prefix
                ),
            ));
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn line_at(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// The line of `key` inside `[table]` (or the n-th `[[table]]`); the table's own
/// line when the key is not written (a default failed validation).
fn line_of_key(text: &str, (table, index): Table, key: &str) -> Option<usize> {
    let header = match index {
        Some(_) => format!("[[{table}]]"),
        None => format!("[{table}]"),
    };
    let mut seen = 0;
    let mut table_line = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if table_line.is_some() {
                break;
            }
            if trimmed.starts_with(&header) {
                if index.is_none_or(|want| want == seen) {
                    table_line = Some(n + 1);
                }
                seen += 1;
            }
            continue;
        }
        if table_line.is_some() {
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(n + 1);
                }
            }
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[server]\nname = \"v\"\nlisen = [\"127.0.0.1:1\"]\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().starts_with("p.toml:3: "), "{err}");
        assert!(err.message.contains("lisen"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let text = "[cache]\ncapacity = \"lots\"\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("cache.capacity"), "{err}");

        let text = "[[route]]\nhost = \"*\"\nupstream = \"gopher://o.test\"\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("https://host[:port]"), "{err}");
    }

    #[test]
    fn cross_key_checks_point_at_the_key() {
        let text =
            "[server]\nname = \"v\"\n\n[cache]\ncapacity = \"1MiB\"\nmax_object_size = \"2MiB\"\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("cache.max_object_size"), "{err}");

        let text = "[[route]]\nhost = \"a\"\nupstream = \"http://a\"\n[[route]]\nhost = \"b\"\npath_prefix = \"x\"\nupstream = \"http://b\"\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
    }

    #[test]
    fn cache_fields_and_slices_are_checked() {
        let err = parse("[cache]\nslice_size = \"100B\"\n", "p.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("cache.slice_size"), "{err}");
        assert!(parse("[cache]\nslice_size = \"0\"\n", "p.toml").is_ok());
        let err = parse("[cache]\ntargeted_fields = [\"no spaces\"]\n", "p.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("not a header field name"), "{err}");
        let text = "[[route]]\nhost = \"a\"\nupstream = \"http://a\"\ntargeted_fields = []\n";
        let config = parse(text, "p.toml").unwrap();
        assert_eq!(config.routes[0].targeted_fields, Some(vec![]));
    }

    #[test]
    fn duplicate_routes_and_zero_timeouts_are_rejected() {
        let text = "[[route]]\nhost = \"a\"\nupstream = \"http://a\"\n[[route]]\nhost = \"a\"\nupstream = \"http://b\"\n";
        let err = parse(text, "p.toml").unwrap_err();
        assert!(err.message.contains("duplicates route[0]"), "{err}");
        assert_eq!(err.line, Some(4), "{err}");
        let err = parse("[upstream]\nconnect_timeout = \"0s\"\n", "p.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse("[server\n", "p.toml").unwrap_err();
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn shipped_file_is_valid_and_equals_defaults() {
        let c = Config::builtin();
        let d = super::super::ServerConfig::default();
        assert_eq!(c.server.listen, d.listen);
        assert_eq!(c.server.name, d.name);
        assert_eq!(c.admin.listen.port(), 8081);
        assert!(c.forward.enabled);
    }
}
