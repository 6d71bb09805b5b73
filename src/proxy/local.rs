//! Requests the proxy answers itself: the PAC file, and TRACE / OPTIONS whose
//! `Max-Forwards` reached zero (RFC 9110 §7.6.2).

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::body::ProxyBody;
use super::error::ProxyError;
use crate::config::PacConfig;

/// Methods this proxy handles, for `Allow`.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT";

/// Paths of the proxy auto-configuration file (and WPAD's name for it).
pub fn is_pac_path(path: &str) -> bool {
    matches!(path, "/proxy.pac" | "/wpad.dat")
}

/// A PAC file that sends everything through `proxy` except plain host names,
/// loopback and the configured bypass list.
pub fn pac(config: &PacConfig, proxy: &str) -> Response<ProxyBody> {
    let js = pac_script(&config.bypass, proxy);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(js)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

/// The PAC script. Every value placed in a JavaScript string literal keeps
/// only visible ASCII other than `"` and `\`, so neither a bypass entry
/// nor the proxy's name (from the request's Host when not configured) can
/// end the literal or the line.
pub fn pac_script(bypass: &[String], proxy: &str) -> String {
    let mut js = String::from(
        "function FindProxyForURL(url, host) {\n  \
         if (isPlainHostName(host) || host === \"localhost\" || shExpMatch(host, \"127.*\") || host === \"::1\" || host === \"[::1]\")\n    \
         return \"DIRECT\";\n",
    );
    for entry in bypass {
        let entry = literal_safe(entry);
        match entry
            .split_once('/')
            .and_then(|(ip, bits)| Some((ip, ipv4_mask(bits.parse().ok()?)?)))
        {
            Some((ip, mask)) => {
                let _ = writeln!(
                    js,
                    "  if (isInNet(host, \"{ip}\", \"{mask}\")) return \"DIRECT\";"
                );
            }
            None => {
                let _ = writeln!(
                    js,
                    "  if (shExpMatch(host, \"{entry}\")) return \"DIRECT\";"
                );
            }
        }
    }
    let proxy = literal_safe(proxy);
    let _ = write!(js, "  return \"PROXY {proxy}; DIRECT\";\n}}\n");
    js
}

fn literal_safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\'))
        .collect()
}

fn ipv4_mask(bits: u8) -> Option<String> {
    (bits <= 32).then(|| {
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        std::net::Ipv4Addr::from(mask).to_string()
    })
}

/// `OPTIONS *` gets what this proxy accepts; `*` with any other method is
/// not a valid request target (RFC 9110 §9.3.7, RFC 9112 §3.2.4).
pub fn asterisk<B>(req: &Request<B>) -> Result<Response<ProxyBody>, ProxyError> {
    if req.method() != Method::OPTIONS {
        return Err(ProxyError::BadRequest(format!(
            "request target * is only for OPTIONS, not {}",
            req.method()
        )));
    }
    Ok(options())
}

fn options() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// What to do with TRACE/OPTIONS and their `Max-Forwards`.
pub enum MaxForwards {
    /// Not TRACE/OPTIONS, or no (valid) Max-Forwards: forward unchanged.
    Forward,
    /// Forward with this decremented value.
    Decrement(u64),
    /// Zero: this proxy is the recipient and answers.
    Answer,
}

pub fn max_forwards<B>(req: &Request<B>) -> MaxForwards {
    if req.method() != Method::TRACE && req.method() != Method::OPTIONS {
        return MaxForwards::Forward;
    }
    let value = req
        .headers()
        .get(header::MAX_FORWARDS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match value {
        None => MaxForwards::Forward,
        Some(0) => MaxForwards::Answer,
        Some(n) => MaxForwards::Decrement(n - 1),
    }
}

/// The answer at Max-Forwards 0: TRACE echoes the request as received
/// (`message/http`, without credentials or cookies, RFC 9110 §9.3.8); OPTIONS
/// lists what this proxy accepts.
pub fn answer_here<B>(req: &Request<B>) -> Response<ProxyBody> {
    if req.method() == Method::OPTIONS {
        return options();
    }
    let mut echo = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version());
    write_fields(&mut echo, req.headers());
    echo.push_str("\r\n");
    let mut resp = Response::new(ProxyBody::full(Bytes::from(echo)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/http"),
    );
    resp
}

fn write_fields(out: &mut String, headers: &HeaderMap) {
    for (name, value) in headers {
        if name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
        {
            continue;
        }
        let _ = write!(
            out,
            "{}: {}\r\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        );
    }
}

/// `https_redirect`: 308 to the same URL over https (RFC 9110 §15.4.9:
/// unlike 301, the method and body are kept). The host loses any port; the
/// TLS listener's port is added unless it is 443.
pub fn to_https(
    host: Option<&HeaderValue>,
    path: Option<&http::uri::PathAndQuery>,
    https_port: Option<u16>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host = host
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ProxyError::BadRequest("a redirect to https needs a Host".into()))?;
    let name = crate::http::validate::host::normalize_host(host);
    let mut location = format!("https://{name}");
    if let Some(port) = https_port.filter(|p| *p != 443) {
        let _ = write!(location, ":{port}");
    }
    location.push_str(path.map_or("/", |p| p.as_str()));
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::BadRequest("the URL cannot be redirected".into()))?;
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(
        b"This site is served over https.\n",
    )));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pac_names_the_proxy_and_bypasses() {
        let config = PacConfig {
            enabled: true,
            proxy: None,
            bypass: vec!["*.corp".into(), "10.0.0.0/8".into()],
        };
        let resp = pac(&config, "127.0.0.1:8080");
        assert_eq!(
            resp.headers()["content-type"],
            "application/x-ns-proxy-autoconfig"
        );
        assert_eq!(ipv4_mask(8).unwrap(), "255.0.0.0");
        assert_eq!(ipv4_mask(0).unwrap(), "0.0.0.0");
        assert!(ipv4_mask(33).is_none());
    }

    #[test]
    fn max_forwards_decisions() {
        let req = |method: &str, mf: Option<&str>| {
            let mut b = Request::builder().method(method).uri("http://a/");
            if let Some(v) = mf {
                b = b.header("max-forwards", v);
            }
            b.body(()).unwrap()
        };
        assert!(matches!(
            max_forwards(&req("TRACE", Some("0"))),
            MaxForwards::Answer
        ));
        assert!(matches!(
            max_forwards(&req("OPTIONS", Some("3"))),
            MaxForwards::Decrement(2)
        ));
        assert!(matches!(
            max_forwards(&req("TRACE", None)),
            MaxForwards::Forward
        ));
        assert!(matches!(
            max_forwards(&req("TRACE", Some("x"))),
            MaxForwards::Forward
        ));
        assert!(matches!(
            max_forwards(&req("GET", Some("0"))),
            MaxForwards::Forward
        ));
        let mut r = req("TRACE", Some("0"));
        r.headers_mut()
            .insert("cookie", "secret=1".parse().unwrap());
        r.headers_mut()
            .insert("authorization", "Basic x".parse().unwrap());
        r.headers_mut().insert("x-visible", "yes".parse().unwrap());
        let resp = answer_here(&r);
        assert_eq!(resp.headers()["content-type"], "message/http");
    }
}
