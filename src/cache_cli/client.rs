//! The admin API over plain HTTP/1.1: one request per connection, the
//! bearer token when there is one, percent-encoded query values.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Failure, ANSWER_TIMEOUT, CONNECT_TIMEOUT};

/// The admin API at one address.
pub(super) struct AdminClient {
    /// As given (`HOST:PORT`, optionally `http://HOST:PORT/`).
    pub addr: String,
    pub token: Option<String>,
}

impl AdminClient {
    /// `HOST:PORT` without scheme or trailing slash.
    fn authority(&self) -> Result<&str, Failure> {
        let addr = self.addr.trim();
        if let Some(rest) = addr.strip_prefix("https://") {
            return Err(Failure::Unusable(format!(
                "the admin API speaks plain HTTP: use --admin {}",
                rest.trim_end_matches('/')
            )));
        }
        let addr = addr
            .strip_prefix("http://")
            .unwrap_or(addr)
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') {
            return Err(Failure::Unusable(format!(
                "--admin {:?}: use HOST:PORT (e.g. 127.0.0.1:8081)",
                self.addr
            )));
        }
        Ok(addr)
    }

    /// One request; the answer's status and body. `Unusable` when the admin
    /// API cannot be reached or does not answer.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let authority = self.authority()?;
        let unreachable = |why: String| {
            Failure::Unusable(format!("cannot reach the admin API at {authority}: {why}"))
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority)
            .header(
                header::USER_AGENT,
                concat!("viaduct/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|_| {
            // Only a token with characters a header cannot carry gets here;
            // the token itself is never printed.
            Failure::Unusable("the admin token is not a valid header value".into())
        })?;
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => {
                    return Err(unreachable(format!(
                        "no connection within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    )))
                }
            };
        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!(
                "no answer within {}s",
                ANSWER_TIMEOUT.as_secs()
            ))),
        }
    }

    /// An error answer: its status and one-line reason, with a hint for 401.
    pub(super) fn refusal(&self, status: StatusCode, body: &[u8]) -> Failure {
        let reason = one_line(body);
        let mut message = format!("the admin API answered {status}");
        if !reason.is_empty() {
            let _ = write!(message, ": {reason}");
        }
        if status == StatusCode::UNAUTHORIZED {
            message.push_str(if self.token.is_some() {
                "\nthe token was refused: check --token, $VIADUCT_ADMIN_TOKEN or [admin] token"
            } else {
                "\nit needs a token: pass --token TOKEN, set $VIADUCT_ADMIN_TOKEN, \
                 or use the configuration that has it (-c FILE with [admin] token)"
            });
        }
        Failure::Answered(message)
    }
}

/// The first non-empty line of an error body, without control characters,
/// at most 200 characters.
pub(super) fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// `path?k=v&...` with every value percent-encoded (URLs carry `:/?&=+#`).
pub(super) fn path_with(path: &str, query: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (i, (name, value)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// Everything but RFC 3986 unreserved characters as `%XX`.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

pub(super) fn parse(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::Answered(format!(
            "the admin API answered something other than JSON ({e}): {}",
            one_line(body)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            path_with(
                "/purge",
                &[("url", "http://a.test/x?y=1&z=a+b#f"), ("soft", "1")]
            ),
            "/purge?url=http%3A%2F%2Fa.test%2Fx%3Fy%3D1%26z%3Da%2Bb%23f&soft=1"
        );
        assert_eq!(percent_encode("é ~"), "%C3%A9%20~");
    }
}
