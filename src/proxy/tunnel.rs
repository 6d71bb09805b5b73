//! CONNECT tunnels (RFC 9110 §9.3.6): the target in authority form, allowed
//! ports only, the destination guard, then `200` and a byte-for-byte copy in
//! both directions with an idle timeout. An EOF on one side shuts down writing
//! on the other (half-close), so protocols that rely on it keep working.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Counter;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::error::ProxyError;
use super::Handler;
use crate::upstream::UpstreamError;

impl Handler {
    /// Opens the tunnel and answers 200; the copy runs in its own task.
    pub(super) async fn connect(
        &self,
        mut req: Request<Incoming>,
        client: &super::ClientConn,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let authority = req
            .uri()
            .authority()
            .cloned()
            .ok_or_else(|| ProxyError::BadRequest("CONNECT needs host:port".into()))?;
        let port = authority
            .port_u16()
            .ok_or_else(|| ProxyError::BadRequest("CONNECT needs host:port".into()))?;
        let policy = self.policy.load_full();
        if !policy.connect_ports.contains(&port) {
            return Err(ProxyError::Forbidden(format!(
                "CONNECT to port {port} is not allowed"
            )));
        }
        let label = authority.to_string();
        let through_parent = match &policy.forward_target.parents {
            Some(parents) => {
                // The parent resolves the name; what can be refused without
                // resolving it is refused here.
                self.guard
                    .check_unresolved(authority.host(), port)
                    .map_err(|e| {
                        ProxyError::Upstream(UpstreamError::from_guard(&e, label.clone()))
                    })?;
                self.open_via_parent(parents, &authority).await?
            }
            None => None,
        };
        let origin = match through_parent {
            Some(stream) => stream,
            None => {
                // Every CONNECT target, however spelled, goes through the
                // guard; the connection is made to exactly the addresses it
                // returns.
                let direct = async {
                    let addrs = self
                        .guard
                        .resolve(authority.host(), port)
                        .await
                        .map_err(|e| {
                            ProxyError::Upstream(UpstreamError::from_guard(&e, label.clone()))
                        })?;
                    self.open(&addrs, &label).await
                };
                let opened = direct.await;
                if let Some(parents) = &policy.forward_target.parents {
                    // Direct after the parents: counted once it is known.
                    parents.count("direct", opened.is_ok());
                }
                opened?
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let idle = policy.tunnel_idle;
        drop(policy);
        let metrics = self.metrics.clone();
        // The tunnel keeps the client connection's place under
        // max_connections, and ends when its listener says stop.
        let slot = client.slot.clone();
        tokio::spawn(async move {
            let client = match on_upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            metrics.tunnels_open.inc();
            let piped = pipe(
                client,
                origin,
                idle,
                &metrics.tunnel_bytes_up,
                &metrics.tunnel_bytes_down,
            );
            tokio::select! {
                (up, down) = piped => tracing::debug!(target = %label, up, down, "tunnel closed"),
                _ = slot.stopped() => tracing::debug!(target = %label, "tunnel closed by shutdown"),
            }
            metrics.tunnels_open.dec();
            drop(slot);
        });
        Ok(Response::new(ProxyBody::empty()))
    }

    /// A tunnel through the first parent that opens one: `Ok(None)` when no
    /// parent could be reached and going direct is allowed.
    async fn open_via_parent(
        &self,
        parents: &crate::upstream::Parents,
        target: &http::uri::Authority,
    ) -> Result<Option<TcpStream>, ProxyError> {
        let mut last = None;
        for parent in parents.candidates() {
            let label = parent.authority.to_string();
            let addrs: Vec<std::net::SocketAddr> =
                match tokio::net::lookup_host(parent.authority.as_str()).await {
                    Ok(addrs) => addrs.collect(),
                    Err(_) => Vec::new(),
                };
            let stream = match self.open(&addrs, &label).await {
                Ok(stream) => stream,
                Err(e) => {
                    parents.record(parent, false);
                    last = Some(e);
                    continue;
                }
            };
            parents.record(parent, true);
            return match parent_connect(
                stream,
                target,
                parent.credentials(),
                self.upstream_connect_timeout,
            )
            .await
            {
                Ok(stream) => Ok(Some(stream)),
                // The parent answered and said no: its answer stands.
                Err(why) => Err(ProxyError::Upstream(UpstreamError::Invalid {
                    upstream: label,
                    detail: why,
                })),
            };
        }
        if parents.never_direct {
            return Err(last.unwrap_or_else(|| {
                ProxyError::Upstream(UpstreamError::Other {
                    upstream: target.to_string(),
                    detail: "no parent proxy is up, and never_direct forbids going direct".into(),
                })
            }));
        }
        Ok(None)
    }

    /// Connects to the first address that answers, within the connect timeout.
    async fn open(
        &self,
        addrs: &[std::net::SocketAddr],
        label: &str,
    ) -> Result<TcpStream, ProxyError> {
        let timeout = self.upstream_connect_timeout;
        let mut refused = false;
        for addr in addrs {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.metrics.upstream.connections.inc();
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                    tracing::debug!(%addr, error = %e, "CONNECT target failed");
                }
                Err(_) => tracing::debug!(%addr, "CONNECT target timed out"),
            }
        }
        let upstream = label.to_string();
        Err(ProxyError::Upstream(if refused {
            UpstreamError::Refused { upstream }
        } else {
            UpstreamError::ConnectTimeout {
                upstream,
                after: timeout,
            }
        }))
    }
}

/// Copies both ways until both sides finished, one side failed, or nothing
/// moved in either direction for `idle`. Returns (client→origin, origin→client) bytes.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration, up: &Counter, down: &Counter) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let to_origin = copy_one_way(&mut ar, &mut bw, idle, &last, start, up);
    let to_client = copy_one_way(&mut br, &mut aw, idle, &last, start, down);
    tokio::pin!(to_origin, to_client);
    // A failure on either side ends the tunnel; an EOF waits for the other side.
    tokio::select! {
        r = &mut to_origin => match r {
            Ok(n) => (n, to_client.await.unwrap_or(0)),
            Err(n) => (n, 0),
        },
        r = &mut to_client => match r {
            Ok(n) => (to_origin.await.unwrap_or(0), n),
            Err(n) => (0, n),
        },
    }
}

/// `Ok(bytes)` on a clean EOF (after shutting down the writer), `Err(bytes)`
/// on an error or when the tunnel went idle.
async fn copy_one_way<R, W>(
    reader: &mut R,
    writer: &mut W,
    idle: Duration,
    last: &AtomicU64,
    start: Instant,
    counter: &Counter,
) -> Result<u64, u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(idle, reader.read(&mut buf)).await {
            Ok(Ok(0)) => {
                let _ = writer.shutdown().await;
                return Ok(total);
            }
            Ok(Ok(n)) => {
                if writer.write_all(&buf[..n]).await.is_err() {
                    return Err(total);
                }
                total += n as u64;
                counter.inc_by(n as u64);
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            Ok(Err(_)) => return Err(total),
            Err(_) => {
                // Idle here; the tunnel is idle only if the other way is too.
                let since = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if since >= idle.as_millis() as u64 {
                    return Err(total);
                }
            }
        }
    }
}

/// Asks the parent on `stream` for a tunnel to `target` (RFC 9110 §9.3.6)
/// and reads its answer head byte by byte, so that no byte of the tunnel is
/// read with it. `Err` says why the parent did not open it.
async fn parent_connect(
    mut stream: TcpStream,
    target: &http::uri::Authority,
    credentials: Option<&http::HeaderValue>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(credentials) = credentials {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(credentials.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let exchange = async {
        stream.write_all(&head).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 16 * 1024 {
                return Err("the parent's answer head is over 16 KiB".to_string());
            }
            let byte = stream.read_u8().await.map_err(|e| e.to_string())?;
            answer.push(byte);
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "the parent did not answer the CONNECT in time".to_string())??;
    let status_line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status_line);
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.len() == 3 && code.starts_with('2') {
        Ok(stream)
    } else {
        Err(format!("the parent refused the tunnel: {}", status.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_copies_both_ways_and_propagates_half_close() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (origin, mut origin_far) = tokio::io::duplex(1024);
        let (up, down) = (Counter::default(), Counter::default());
        let task = tokio::spawn(async move {
            let (up, down) = (up, down);
            let r = pipe(client, origin, Duration::from_secs(5), &up, &down).await;
            (r, up.get(), down.get())
        });
        client_far.write_all(b"hello").await.unwrap();
        client_far.shutdown().await.unwrap(); // client half-closes
        let mut got = Vec::new();
        origin_far.read_to_end(&mut got).await.unwrap(); // origin sees EOF
        assert_eq!(got, b"hello");
        origin_far
            .write_all(b"reply after half-close")
            .await
            .unwrap();
        origin_far.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_far.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after half-close");
        let ((a, b), up, down) = task.await.unwrap();
        assert_eq!((a, b), (5, 22));
        assert_eq!((up, down), (5, 22));
    }

    #[tokio::test]
    async fn an_idle_tunnel_is_closed() {
        let (client, _client_far) = tokio::io::duplex(64);
        let (origin, _origin_far) = tokio::io::duplex(64);
        let (up, down) = (Counter::default(), Counter::default());
        let r = pipe(client, origin, Duration::from_millis(50), &up, &down).await;
        assert_eq!(r, (0, 0));
    }
}
