//! Refusals and failures the proxy answers itself: a status and a one-line
//! reason, as text/plain.

use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use super::body::ProxyBody;

use crate::upstream::UpstreamError;

#[derive(Debug)]
pub enum ProxyError {
    BadRequest(String),
    Forbidden(String),
    NoRoute(String),
    PayloadTooLarge(u64),
    /// The request head is larger than `[server] max_header_size`.
    HeadTooLarge,
    NotImplemented(String),
    /// Our own name is already in `Via` (RFC 9110 §7.6.3).
    Loop,
    Upstream(UpstreamError),
    /// `only-if-cached` and nothing usable stored (RFC 9111 §5.2.1.7).
    NotCached,
    /// 407 with the `Proxy-Authenticate` challenge (RFC 9110 §11.7.1).
    ProxyAuthRequired {
        challenge: http::HeaderValue,
        why: String,
    },
    /// 401 with the `WWW-Authenticate` challenge of a route's `basic_auth`.
    Unauthorized {
        challenge: http::HeaderValue,
        why: String,
    },
    MethodNotAllowed(String),
    /// A stored response that must be revalidated could not be (§5.2.2.2).
    RevalidationFailed(UpstreamError),
    /// The handler panicked (`server::catch`).
    Internal,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
            ProxyError::Upstream(e) => e.status(),
            ProxyError::NotCached | ProxyError::RevalidationFailed(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::ProxyAuthRequired { .. } => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A token for `Cache-Status: detail=` on answers made without the cache.
    pub fn detail(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::NoRoute(_) => "no-route",
            ProxyError::PayloadTooLarge(_) => "too-large",
            ProxyError::HeadTooLarge => "head-too-large",
            ProxyError::NotImplemented(_) => "not-implemented",
            ProxyError::Loop => "loop",
            ProxyError::Upstream(_) => "upstream-error",
            ProxyError::NotCached => "only-if-cached",
            ProxyError::ProxyAuthRequired { .. } => "proxy-auth",
            ProxyError::Unauthorized { .. } => "auth",
            ProxyError::MethodNotAllowed(_) => "method-not-allowed",
            ProxyError::RevalidationFailed(_) => "must-revalidate",
            ProxyError::Internal => "internal",
        }
    }

    /// Whether the client connection should close after this answer: the
    /// request body may be unread or its framing untrustworthy.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::PayloadTooLarge(_)
                | ProxyError::HeadTooLarge
                // The connection's state after a panic is not to be trusted.
                | ProxyError::Internal
        )
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::Forbidden(why) => write!(f, "forbidden: {why}"),
            ProxyError::NoRoute(host) => write!(f, "no route for host {host}"),
            ProxyError::PayloadTooLarge(limit) => {
                write!(f, "request body is larger than the {limit}-byte limit")
            }
            ProxyError::HeadTooLarge => {
                write!(f, "request header fields are larger than max_header_size")
            }
            ProxyError::NotImplemented(what) => write!(f, "not implemented: {what}"),
            ProxyError::Loop => write!(
                f,
                "loop detected: this request already passed through this proxy"
            ),
            ProxyError::Upstream(e) => e.fmt(f),
            ProxyError::NotCached => write!(f, "only-if-cached: no usable response is stored"),
            ProxyError::ProxyAuthRequired { why, .. } => {
                write!(f, "proxy authentication required: {why}")
            }
            ProxyError::Unauthorized { why, .. } => write!(f, "authentication required: {why}"),
            ProxyError::MethodNotAllowed(why) => write!(f, "method not allowed: {why}"),
            ProxyError::Internal => write!(
                f,
                "internal error: the proxy failed while answering this request"
            ),
            ProxyError::RevalidationFailed(e) => {
                write!(
                    f,
                    "stored response must be revalidated and could not be: {e}"
                )
            }
        }
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::RequestBodyTooLarge(limit) => ProxyError::PayloadTooLarge(limit),
            e => ProxyError::Upstream(e),
        }
    }
}

/// The 500 for a request whose handler panicked.
pub(crate) fn internal_error_response() -> Response<ProxyBody> {
    error_response(&ProxyError::Internal, Version::HTTP_11)
}

/// A short text answer: status plus a one-line reason.
pub(super) fn error_response(e: &ProxyError, version: Version) -> Response<ProxyBody> {
    let body = Bytes::from(format!("{e}\n"));
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match e {
        ProxyError::ProxyAuthRequired { challenge, .. } => {
            h.insert(header::PROXY_AUTHENTICATE, challenge.clone());
        }
        ProxyError::Unauthorized { challenge, .. } => {
            h.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        ProxyError::MethodNotAllowed(_) => {
            h.insert(header::ALLOW, HeaderValue::from_static(super::local::ALLOW));
        }
        ProxyError::Upstream(UpstreamError::GroupDown { retry_after, .. }) => {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        _ => {}
    }
    if e.closes_connection() && version != Version::HTTP_2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
