//! Proxy authentication (RFC 9110 §11.7, RFC 7617 Basic) for forward
//! requests and CONNECT. Passwords are stored as bcrypt hashes; verifying one
//! costs tens of milliseconds, so it runs on the blocking pool, and credentials
//! that verified are remembered for a few minutes (browsers send them on every
//! request). Failures are logged with the user name and client, never the
//! password.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};

use super::error::ProxyError;
use crate::config::AuthConfig;

pub struct ProxyAuth {
    /// `Proxy-Authorization` (forward) or `Authorization` (a route's
    /// `basic_auth`, answered with 401 and `WWW-Authenticate`).
    header: header::HeaderName,
    users: BTreeMap<String, String>,
    /// Checked when the user is unknown, so unknown and known users take the
    /// same time (no user enumeration by timing).
    dummy_hash: String,
    challenge: HeaderValue,
    verified: moka::sync::Cache<String, ()>,
}

impl ProxyAuth {
    /// A route's own Basic authentication (RFC 7617): `Authorization`, 401.
    pub fn for_origin(config: &AuthConfig) -> ProxyAuth {
        ProxyAuth {
            header: header::AUTHORIZATION,
            ..ProxyAuth::new(config)
        }
    }

    fn required(&self, why: &str) -> ProxyError {
        if self.header == header::AUTHORIZATION {
            ProxyError::Unauthorized {
                challenge: self.challenge.clone(),
                why: why.to_string(),
            }
        } else {
            ProxyError::ProxyAuthRequired {
                challenge: self.challenge.clone(),
                why: why.to_string(),
            }
        }
    }

    pub fn new(config: &AuthConfig) -> ProxyAuth {
        let realm = config.realm.replace(['"', '\\'], "");
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"viaduct\""));
        let cost = config
            .users
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy_hash =
            bcrypt::hash(format!("{:?}", std::time::Instant::now()), cost).unwrap_or_default();
        ProxyAuth {
            header: header::PROXY_AUTHORIZATION,
            users: config.users.clone(),
            dummy_hash,
            challenge,
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    /// Ok when `Proxy-Authorization` carries a known user and the right password.
    pub async fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), ProxyError> {
        let required = |why: &str| self.required(why);
        let Some(value) = headers.get(&self.header).and_then(|v| v.to_str().ok()) else {
            return Err(required("proxy credentials required"));
        };
        if self.verified.contains_key(value) {
            return Ok(());
        }
        let Some((user, password)) = decode_basic(value) else {
            return Err(required("malformed Proxy-Authorization"));
        };
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if known && matches {
            self.verified.insert(value.to_string(), ());
            return Ok(());
        }
        tracing::warn!(%client, user = %user, field = %self.header, "authentication failed");
        Err(required("wrong proxy credentials"))
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode_basic(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> ProxyAuth {
        let hash = bcrypt::hash("pa:ss", 4).unwrap();
        ProxyAuth::new(&AuthConfig {
            realm: "office".into(),
            users: [("alice".to_string(), hash)].into_iter().collect(),
        })
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[tokio::test]
    async fn basic_credentials_are_checked() {
        let a = auth();
        let ip = "127.0.0.1".parse().unwrap();
        assert!(a.check(&with(&basic("alice:pa:ss")), ip).await.is_ok());
        // Cached after the first success.
        assert!(a.check(&with(&basic("alice:pa:ss")), ip).await.is_ok());
        assert!(a.check(&with(&basic("alice:wrong")), ip).await.is_err());
        assert!(a.check(&with(&basic("mallory:pa:ss")), ip).await.is_err());
        assert!(a.check(&with("Bearer x"), ip).await.is_err());
        let err = a.check(&HeaderMap::new(), ip).await.unwrap_err();
        match err {
            ProxyError::ProxyAuthRequired { challenge, .. } => {
                assert_eq!(challenge, "Basic realm=\"office\", charset=\"UTF-8\"")
            }
            other => panic!("{other:?}"),
        }
    }
}
