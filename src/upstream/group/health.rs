//! Active health checks of an upstream group's servers: `GET path` on a new
//! connection every `interval`; `fall` failures in a row take a server out,
//! `rise` passes bring it back.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::{Group, HealthCheckConfig};

pub async fn run(group: Weak<Group>, index: usize, check: HealthCheckConfig) {
    let mut streak = crate::upstream::streak::Streak::default();
    let mut tick = tokio::time::interval(check.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(group) = group.upgrade() else { return };
        let server = &group.servers[index];
        let ok = tokio::time::timeout(check.timeout.get(), probe(&group, index, &check.path))
            .await
            .is_ok_and(|status| status == Some(check.expect));
        let unhealthy = server.unhealthy.load(Ordering::Relaxed);
        match streak.record(ok, unhealthy, check.rise, check.fall) {
            Some(true) => {
                server.unhealthy.store(false, Ordering::Relaxed);
                group.show_state(index);
                tracing::info!(group = %group.name, server = %server.label, "upstream server passed its health checks: up");
            }
            Some(false) => {
                server.unhealthy.store(true, Ordering::Relaxed);
                group.show_state(index);
                tracing::warn!(group = %group.name, server = %server.label, "upstream server failed its health checks: down");
            }
            None => {}
        }
    }
}

/// The status of one `GET path`, or `None` when there was no answer.
async fn probe(group: &Group, index: usize, path: &str) -> Option<u16> {
    let server = &group.servers[index];
    let tcp = tokio::net::TcpStream::connect((server.url.host.as_str(), server.url.port))
        .await
        .ok()?;
    let req = Request::get(path)
        .header(http::header::HOST, server.label.as_ref())
        .header(http::header::USER_AGENT, "viaduct-health-check")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let status = match &server.tls {
        None => send(TokioIo::new(tcp), req).await,
        Some(tls) => {
            let name = crate::tls::TlsClient::server_name(&server.url.host).ok()?;
            let stream = tls.0.connector().connect(name, tcp).await.ok()?;
            send(TokioIo::new(stream), req).await
        }
    };
    status
}

async fn send<I>(io: I, req: Request<Empty<Bytes>>) -> Option<u16>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().as_u16())
}
