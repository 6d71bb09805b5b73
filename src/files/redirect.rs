//! `[[redirect]]` rules, applied before routing: `from` is an exact path,
//! or a prefix ending in `*` whose rest is appended to `to` (when `to` ends
//! in `*` too). The query string is kept. First matching rule wins.

use http::{HeaderValue, StatusCode};

use crate::config::{HostPattern, RedirectConfig};

pub struct Redirects {
    rules: Vec<Rule>,
}

struct Rule {
    host: HostPattern,
    from: String,
    prefix: bool,
    to: String,
    to_rest: bool,
    status: StatusCode,
}

impl Redirects {
    pub fn new(configs: &[RedirectConfig]) -> Redirects {
        let rules = configs
            .iter()
            .map(|c| Rule {
                host: c.host.clone(),
                prefix: c.from.ends_with('*'),
                from: c.from.trim_end_matches('*').to_string(),
                to_rest: c.to.ends_with('*'),
                to: c.to.trim_end_matches('*').to_string(),
                status: StatusCode::from_u16(c.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            })
            .collect();
        Redirects { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The status and `Location` for a request to `host` with this path
    /// and query, when a rule matches.
    pub fn find(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<(StatusCode, HeaderValue)> {
        let rule = self.rules.iter().find(|r| {
            r.host.matches(host)
                && if r.prefix {
                    path.starts_with(&r.from)
                } else {
                    path == r.from
                }
        })?;
        let mut location = rule.to.clone();
        if rule.prefix && rule.to_rest {
            location.push_str(&path[rule.from.len()..]);
        }
        // `//host` or `/\host` would send the client to another host: a
        // path stays a path (`/blog//evil.example` with `to = "/*"`).
        if location.starts_with('/') {
            let rest = location.trim_start_matches(['/', '\\']);
            location = format!("/{rest}");
        }
        if let Some(query) = query {
            location.push('?');
            location.push_str(query);
        }
        Some((rule.status, HeaderValue::from_str(&location).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, from: &str, to: &str, status: u16) -> RedirectConfig {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[redirect]]\nhost = \"{host}\"\nfrom = \"{from}\"\nto = \"{to}\"\nstatus = {status}\n"
        );
        crate::config::Config::from_toml(&text, "t")
            .unwrap()
            .redirects
            .remove(0)
    }

    #[test]
    fn exact_and_prefix_rules() {
        let r = Redirects::new(&[
            rule("a.test", "/old/*", "/new/*", 308),
            rule("*", "/exact", "https://b.test/there", 302),
        ]);
        let (status, to) = r.find("a.test", "/old/x/y", Some("q=1")).unwrap();
        assert_eq!(
            (status.as_u16(), to.to_str().unwrap()),
            (308, "/new/x/y?q=1")
        );
        assert!(r.find("b.test", "/old/x", None).is_none());
        let (status, to) = r.find("c.test", "/exact", None).unwrap();
        assert_eq!(
            (status.as_u16(), to.to_str().unwrap()),
            (302, "https://b.test/there")
        );
        assert!(r.find("c.test", "/exact/more", None).is_none());
        let open = Redirects::new(&[rule("*", "/blog/*", "/*", 301)]);
        for evil in [
            "/blog//evil.test/x",
            "/blog/\\evil.test/x",
            "/blog/\\/evil.test",
        ] {
            let (_, to) = open.find("a", evil, None).unwrap();
            let to = to.to_str().unwrap();
            assert!(
                to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\"),
                "{to}"
            );
        }
    }
}
