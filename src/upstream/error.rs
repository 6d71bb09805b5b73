//! Upstream failures, named so a person can act on them: which origin, and what
//! happened (refused, timed out, closed, answered nonsense).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use http::StatusCode;

use super::connector::ConnectError;
use super::guard::{GuardError, Refusal};
use crate::http::body::BodyTooLarge;

#[derive(Debug)]
pub enum UpstreamError {
    /// The destination guard refused it (`upstream::guard`).
    Denied {
        upstream: String,
        why: Refusal,
    },
    Refused {
        upstream: String,
    },
    ConnectTimeout {
        upstream: String,
        after: Duration,
    },
    Resolve {
        upstream: String,
    },
    Connect {
        upstream: String,
        detail: String,
    },
    ResponseTimeout {
        upstream: String,
        after: Duration,
    },
    /// The origin closed the connection before sending a response head.
    Closed {
        upstream: String,
    },
    Invalid {
        upstream: String,
        detail: String,
    },
    /// The client's body broke off while it was being sent upstream.
    ClientBody {
        detail: String,
    },
    RequestBodyTooLarge(u64),
    /// Every server of an upstream group is down (503 with Retry-After).
    GroupDown {
        group: String,
        retry_after: u64,
    },
    /// The TLS handshake with the origin failed: certificate, protocol, ALPN.
    Tls {
        upstream: String,
        detail: String,
    },
    Other {
        upstream: String,
        detail: String,
    },
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            UpstreamError::GroupDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Denied { .. } => StatusCode::FORBIDDEN,
            UpstreamError::RequestBodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Every value `kind` can return.
    pub const KINDS: [&'static str; 16] = [
        "denied",
        "refused",
        "connect-timeout",
        "resolve",
        "connect",
        "timeout",
        "closed",
        "invalid-response",
        "client-body",
        "request-too-large",
        "tls",
        "group-down",
        "other",
        // Counted where they happen, not as answers to a client:
        "unsolicited",
        "body-timeout",
        "framing",
    ];

    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Denied { .. } => "denied",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::ConnectTimeout { .. } => "connect-timeout",
            UpstreamError::Resolve { .. } => "resolve",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::ResponseTimeout { .. } => "timeout",
            UpstreamError::Closed { .. } => "closed",
            UpstreamError::Invalid { .. } => "invalid-response",
            UpstreamError::ClientBody { .. } => "client-body",
            UpstreamError::RequestBodyTooLarge(_) => "request-too-large",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::GroupDown { .. } => "group-down",
            UpstreamError::Other { .. } => "other",
        }
    }

    /// The origin could not be reached or gave no answer at all: refused,
    /// reset or closed before a response, timed out, unresolvable, or a
    /// whole group down (RFC 9111 §4.2.4 lets a cache serve stale then).
    pub fn unreachable(&self) -> bool {
        match self {
            // A handshake that failed (a certificate refused) is no outage.
            UpstreamError::Tls { .. } => false,
            UpstreamError::ResponseTimeout { .. }
            | UpstreamError::Closed { .. }
            | UpstreamError::GroupDown { .. } => true,
            _ => self.before_sending(),
        }
    }

    /// Nothing of the request reached the origin: the connection (or its
    /// TLS handshake) could not be made.
    pub fn before_sending(&self) -> bool {
        matches!(
            self,
            UpstreamError::Refused { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Resolve { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
        )
    }

    /// A failure that counts against the server in an upstream group.
    pub fn marks_server_down(&self) -> bool {
        self.before_sending()
            || matches!(
                self,
                UpstreamError::ResponseTimeout { .. } | UpstreamError::Closed { .. }
            )
    }

    /// A destination the guard would not let through (forward traffic and CONNECT).
    pub fn from_guard(e: &GuardError, upstream: String) -> UpstreamError {
        match e {
            GuardError::Denied { why, .. } => UpstreamError::Denied {
                upstream,
                why: *why,
            },
            GuardError::Resolve(_) => UpstreamError::Resolve { upstream },
        }
    }

    /// Names a failed connect for the client.
    pub(super) fn from_connect(
        e: ConnectError,
        upstream: &str,
        connect_timeout: Duration,
    ) -> UpstreamError {
        let upstream = upstream.to_string();
        match e {
            ConnectError::Guard(e) => UpstreamError::from_guard(&e, upstream),
            ConnectError::Resolve => UpstreamError::Resolve { upstream },
            ConnectError::Refused => UpstreamError::Refused { upstream },
            ConnectError::Timeout => UpstreamError::ConnectTimeout {
                upstream,
                after: connect_timeout,
            },
            ConnectError::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                UpstreamError::ConnectTimeout {
                    upstream,
                    after: connect_timeout,
                }
            }
            ConnectError::Io(e) => UpstreamError::Connect {
                upstream,
                detail: e.to_string(),
            },
        }
    }

    /// Names a failed exchange on an open connection for the client.
    pub(super) fn from_hyper(e: &hyper::Error, upstream: &str) -> UpstreamError {
        let upstream = upstream.to_string();
        if let Some(limit) = find::<BodyTooLarge>(e) {
            return UpstreamError::RequestBodyTooLarge(limit.0);
        }
        if e.is_user() {
            return UpstreamError::ClientBody {
                detail: innermost(e),
            };
        }
        if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            return UpstreamError::Invalid {
                upstream,
                detail: e.to_string(),
            };
        }
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || is_reset_chain(e) {
            return UpstreamError::Closed { upstream };
        }
        UpstreamError::Other {
            upstream,
            detail: innermost(e),
        }
    }
}

/// Whether `e` or one of its causes says `text`.
pub(super) fn mentions(e: &(dyn StdError + 'static), text: &str) -> bool {
    chain(e).any(|e| e.to_string().contains(text))
}

/// Whether an I/O reset (the origin closed under us) is behind `e`.
pub(super) fn is_reset_chain(e: &(dyn StdError + 'static)) -> bool {
    find::<io::Error>(e).is_some_and(|io| is_reset(io.kind()))
}

fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    chain(e).find_map(|e| e.downcast_ref::<T>())
}

fn innermost(e: &(dyn StdError + 'static)) -> String {
    chain(e).last().map(|e| e.to_string()).unwrap_or_default()
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Denied { upstream, why } => {
                write!(
                    f,
                    "forwarding to {upstream} is not allowed by this proxy: {why}"
                )
            }
            UpstreamError::Refused { upstream } => {
                write!(f, "upstream {upstream} refused the connection")
            }
            UpstreamError::ConnectTimeout { upstream, after } => write!(
                f,
                "upstream {upstream} did not accept the connection within {}",
                humantime::format_duration(*after)
            ),
            UpstreamError::Resolve { upstream } => {
                write!(f, "upstream {upstream}: host name could not be resolved")
            }
            UpstreamError::Connect { upstream, detail } => {
                write!(f, "upstream {upstream}: connection failed: {detail}")
            }
            UpstreamError::ResponseTimeout { upstream, after } => write!(
                f,
                "upstream {upstream} sent no response within {}",
                humantime::format_duration(*after)
            ),
            UpstreamError::Closed { upstream } => {
                write!(
                    f,
                    "upstream {upstream} closed the connection without a response"
                )
            }
            UpstreamError::Invalid { upstream, detail } => {
                write!(f, "upstream {upstream} sent an invalid response: {detail}")
            }
            UpstreamError::ClientBody { detail } => {
                write!(f, "the request body could not be read: {detail}")
            }
            UpstreamError::GroupDown { group, .. } => {
                write!(f, "every server of upstream group {group} is down")
            }
            UpstreamError::Tls { upstream, detail } => {
                write!(f, "TLS to upstream {upstream} failed: {detail}")
            }
            UpstreamError::RequestBodyTooLarge(limit) => {
                write!(f, "request body is larger than the {limit}-byte limit")
            }
            UpstreamError::Other { upstream, detail } => {
                write!(f, "upstream {upstream}: {detail}")
            }
        }
    }
}

impl StdError for UpstreamError {}
