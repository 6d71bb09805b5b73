//! Protocol upgrades through the proxy (RFC 9110 §7.8), e.g. WebSocket:
//! `Upgrade` and `Connection: upgrade` survive hop-by-hop stripping only for a
//! real upgrade request, and after the origin's 101 the two connections are
//! joined byte for byte.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocols a client asked to switch to, when it asked for an upgrade.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts the upgrade fields back after hop-by-hop stripping.
pub fn restore(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
}

/// After the origin agreed (101), joins the client and origin connections.
/// The joined pair keeps `slot` (the client connection's place under
/// max_connections) and ends when the listener says stop.
pub fn join<B>(
    client: OnUpgrade,
    origin_response: &mut Response<B>,
    slot: std::sync::Arc<crate::server::ConnectionSlot>,
) {
    debug_assert_eq!(origin_response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let origin = hyper::upgrade::on(origin_response);
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client, origin) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut origin = TokioIo::new(origin);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut origin) => match copied {
                Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
            },
            _ = slot.stopped() => tracing::debug!("upgraded connection closed by shutdown"),
        }
    });
}
