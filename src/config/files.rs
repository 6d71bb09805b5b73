//! The file-serving settings: checks of `root` routes, and `[[redirect]]`.

use serde::Deserialize;

use super::{HostPattern, RouteConfig};

/// `[[redirect]] host = "...", from = "/old/*", to = "/new/*", status = 301`:
/// a request for `from` (exact, or a prefix ending in `*` whose rest is
/// appended to `to`) is answered with a redirect, before routing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default = "any_host")]
    pub host: HostPattern,
    pub from: String,
    pub to: String,
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn any_host() -> HostPattern {
    HostPattern::Any
}

fn default_redirect_status() -> u16 {
    301
}

/// What is wrong with a `root` route, as (key, reason).
pub fn check_route(
    route: &RouteConfig,
    root: &std::path::Path,
) -> Result<(), (&'static str, String)> {
    if !root.is_absolute() {
        return Err((
            "root",
            format!("{} must be an absolute path", root.display()),
        ));
    }
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(("root", format!("{} is not a directory", root.display()))),
        Err(e) => return Err(("root", format!("{}: {e}", root.display()))),
    }
    if let Some(bad) = route
        .index
        .iter()
        .find(|name| name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.'))
    {
        return Err((
            "index",
            format!("{bad:?}: a file name, without slashes, not hidden"),
        ));
    }
    if let Some(value) = &route.cache_control {
        if http::HeaderValue::from_str(value).is_err() {
            return Err((
                "cache_control",
                format!("{value:?} is not a valid field value"),
            ));
        }
    }
    for (ext, ty) in &route.types {
        if ext.is_empty() || ext.contains(['.', '/']) {
            return Err(("types", format!("{ext:?}: an extension without its dot")));
        }
        if ty.parse::<http::HeaderValue>().is_err() || !ty.contains('/') {
            return Err(("types", format!("{ty:?} is not a media type")));
        }
    }
    if let Some(auth) = &route.basic_auth {
        if auth.users.is_empty() {
            return Err(("basic_auth", "name at least one user".into()));
        }
        if let Some((user, _)) = auth.users.iter().find(|(_, h)| !h.starts_with("$2")) {
            return Err((
                "basic_auth",
                format!("user {user:?}: use a bcrypt hash (viaduct hash-password)"),
            ));
        }
    }
    Ok(())
}

pub fn check_redirect(r: &RedirectConfig) -> Result<(), (&'static str, String)> {
    if !matches!(r.status, 301 | 302 | 303 | 307 | 308) {
        return Err((
            "status",
            format!("{}: use 301, 302, 303, 307 or 308", r.status),
        ));
    }
    let from_body = r.from.strip_suffix('*').unwrap_or(&r.from);
    if !r.from.starts_with('/') || from_body.contains('*') {
        return Err((
            "from",
            format!(
                "{:?}: a path starting with /, with at most a final *",
                r.from
            ),
        ));
    }
    let wild = r.from.ends_with('*');
    let to_wild = r.to.ends_with('*');
    if r.to.trim_end_matches('*').contains('*') || (to_wild && !wild) {
        return Err((
            "to",
            format!("{:?}: a final * only, when from ends with *", r.to),
        ));
    }
    if !(r.to.starts_with('/') || r.to.starts_with("http://") || r.to.starts_with("https://"))
        || http::HeaderValue::from_str(&r.to).is_err()
    {
        return Err(("to", format!("{:?}: a path or an http(s) URL", r.to)));
    }
    Ok(())
}
