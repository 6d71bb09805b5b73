//! Failover across the servers of an upstream group: a request goes to the
//! server the group picks and, while servers fail, on to the next one when
//! nothing of it was sent, or once more when a bodyless idempotent request
//! was sent and got no answer.

use http::{Request, Response};

use super::{GroupTarget, OriginBody, StoreTag, Upstream, UpstreamError};
use crate::http::body::RequestBody;

/// What a failed send gives back for another server.
pub(super) enum Unsent {
    /// Nothing of it reached the origin: any request may go elsewhere.
    Request(Request<RequestBody>),
    /// It was sent; a copy of a bodyless idempotent request, to send once more.
    Replay(http::request::Parts),
}

impl Upstream {
    /// Sends to the servers of a group, one after another while they fail:
    /// any request whose connection could not be made (nothing reached the
    /// origin), and a bodyless idempotent one once more after it was sent.
    pub(super) async fn send_group(
        &self,
        req: Request<RequestBody>,
        target: &GroupTarget,
    ) -> Result<Response<OriginBody>, UpstreamError> {
        let group = &target.group;
        let (mut parts, body) = req.into_parts();
        let tag = parts.extensions.remove::<StoreTag>();
        let mut next = Request::from_parts(parts, body);
        let mut resent = false;
        // Servers tried, by index (a group has at most 64).
        let mut tried = 0u64;
        let mut last: Option<UpstreamError> = None;
        loop {
            let Some(index) = group.pick(target.hash, tried) else {
                let any_up = (0..group.servers().len()).any(|i| group.is_up(i));
                return Err(match last {
                    // Servers are up but each one tried failed: say how.
                    Some(e) if any_up => e,
                    _ => UpstreamError::GroupDown {
                        group: group.name.to_string(),
                        retry_after: group.retry_after(),
                    },
                });
            };
            tried |= 1 << index;
            let server = group.server(index);
            let mut req = next;
            server.aim(&mut req, target.set_host);
            if let Some(tag) = &tag {
                req.extensions_mut().insert(tag.clone());
            }
            let in_flight = server.begin();
            let started = std::time::Instant::now();
            let pool = group.pool.as_deref().unwrap_or(self);
            let result = pool.send_to(req, &server.label, server.tls.as_ref()).await;
            drop(in_flight);
            let (e, back) = match result {
                Ok(resp) => {
                    server.metrics.response_time.observe(started.elapsed());
                    if matches!(resp.status().as_u16(), 502..=504) {
                        group.failed(index);
                    }
                    return Ok(resp);
                }
                Err(failure) => failure,
            };
            if e.marks_server_down() {
                group.failed(index);
            }
            next = match back {
                // Nothing reached the origin: the next server gets it.
                Some(Unsent::Request(unsent)) if e.before_sending() => unsent,
                // Sent, and failed without an answer: once more elsewhere.
                Some(Unsent::Replay(copy)) if !resent && e.marks_server_down() => {
                    resent = true;
                    Request::from_parts(copy, RequestBody::Empty)
                }
                _ => return Err(e),
            };
            tracing::debug!(group = %group.name, server = %server.label, error = %e, "trying the next server of the group");
            last = Some(e);
        }
    }
}
