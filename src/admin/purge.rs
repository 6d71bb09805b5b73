//! `POST /purge?url=...`, `?prefix=...` or `?tag=...` (repeatable), hard or
//! `&soft=1`, in every part of the cache, or only in one: `&route=NAME` (a
//! reverse route) or `&mode=forward`. Answers JSON with the count.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::{text, Admin};
use serde_json::json;

use crate::cache::key;
use crate::cache::shared::Selector;
use crate::cache::tags::MAX_TAG_BYTES;

impl Admin {
    pub(super) async fn purge(&self, query: &str) -> Response<Full<Bytes>> {
        let param = |name| query_param(query, name);
        let namespaces = match self.namespaces(query) {
            Ok(namespaces) => namespaces,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        let soft = match param("soft").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("soft={other:?}: use soft=1 or soft=0\n"),
                )
            }
        };
        let tags = query_params(query, "tag");
        let selectors = [
            param("url").is_some(),
            param("prefix").is_some(),
            !tags.is_empty(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return text(
                StatusCode::BAD_REQUEST,
                "name one selector: POST /purge?url=URL, ?prefix=URL or ?tag=T (tag may repeat), \
                 optionally with &soft=1\n"
                    .into(),
            );
        }
        let (name, target, selector) = if let Some(url) = param("url") {
            let Some(target) = key_of(&url) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("not an absolute http(s) URL: {url}\n"),
                );
            };
            let keys = namespaces
                .iter()
                .map(|ns| self.handler.key_in(ns, &target))
                .collect();
            ("url", json!(target), Selector::Url { keys })
        } else if let Some(prefix) = param("prefix") {
            let Some(target) = key_of(&prefix) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("not an absolute http(s) URL: {prefix}\n"),
                );
            };
            let selector = Selector::Prefix {
                namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
                prefix: target.clone(),
            };
            ("prefix", json!(target), selector)
        } else {
            if let Some(bad) = tags.iter().find(|t| !super::listing::valid_tag(t)) {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "tag {:?}: a tag is 1 to {MAX_TAG_BYTES} bytes, without spaces or commas\n",
                        bad.chars().take(64).collect::<String>()
                    ),
                );
            }
            let selector = Selector::Tags {
                namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
                tags: tags.clone(),
            };
            ("tag", json!(tags), selector)
        };
        let purged = self.cache.purge(selector, soft).await;
        // A URL is one URL however many parts of the cache held it.
        let here = if name == "url" {
            purged.here.min(1)
        } else {
            purged.here
        };
        let mut body = json!({
            "selector": name,
            "target": target,
            "purged": here,
            "soft": soft,
        });
        let mut found = here;
        match purged.shared {
            None => {}
            Some(Ok(n)) => {
                let n = if name == "url" { n.min(1) } else { n };
                found = found.max(n);
                body["shared"] = json!({ "purged": n });
                body["purged"] = json!(found);
            }
            Some(Err(failure)) => {
                body["shared"] = json!({ "error": failure.as_str() });
            }
        }
        let incomplete = body.get("shared").is_some_and(|s| s.get("error").is_some());
        let mut resp = super::json(body);
        if incomplete {
            // Purged here, not in Redis (nor, then, on the other nodes).
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        } else if found == 0 && name == "url" {
            *resp.status_mut() = StatusCode::NOT_FOUND;
        }
        resp
    }
}

impl Admin {
    /// The parts of the cache a request names: `route=NAME`, `mode=forward`,
    /// or (neither) all of them.
    /// `Err` says what was wrong with the choice (a 400).
    pub(super) fn namespaces(&self, query: &str) -> Result<Vec<String>, String> {
        let route = query_param(query, "route");
        let mode = query_param(query, "mode");
        // The routes of the configuration in use (a reload may change them).
        let chosen: Vec<String> = self
            .handler
            .cache_namespaces()
            .into_iter()
            .filter(|(label, ns)| match (&route, &mode) {
                (Some(route), _) => ns.starts_with("route:") && label == route,
                (None, Some(mode)) => mode == "forward" && ns.as_str() == key::FORWARD,
                (None, None) => true,
            })
            .map(|(_, ns)| ns)
            .collect();
        if chosen.is_empty() {
            let what = match (route, mode) {
                (Some(route), _) => format!("no route named {route:?}\n"),
                (None, Some(mode)) => {
                    format!("unknown mode {mode:?} (use mode=forward or route=NAME)\n")
                }
                (None, None) => "no cache namespaces\n".into(),
            };
            return Err(what);
        }
        Ok(chosen)
    }
}

/// The URL part of the cache key of an absolute `http://` or `https://` URL
/// (or URL prefix): the scheme is part of the key.
pub(super) fn key_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let (scheme, port) = match uri.scheme_str() {
        Some("http") => ("http", 80),
        Some("https") => ("https", 443),
        _ => return None,
    };
    let authority = uri.authority()?;
    // A URL without a path means "/", which also prefixes every key of the origin.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Some(key::primary("", scheme, authority.as_str(), port, path))
}

/// Every decoded value of `name` in a query string, in order.
pub(super) fn query_params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

/// The decoded value of `name` in a query string.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` (form encoding) in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            percent_decode("http%3A%2F%2Fa.test%2Fx%3Fy%3D1"),
            "http://a.test/x?y=1"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn keys_from_urls() {
        assert_eq!(
            key_of("http://A.test/x?y=1").as_deref(),
            Some("http://a.test:80/x?y=1")
        );
        assert_eq!(
            key_of("http://a.test").as_deref(),
            Some("http://a.test:80/")
        );
        assert_eq!(
            key_of("https://a.test/").as_deref(),
            Some("https://a.test:443/")
        );
        assert!(key_of("ftp://a.test/").is_none());
        assert!(key_of("/relative").is_none());
    }
}
