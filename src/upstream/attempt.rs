//! One try at an origin: a pooled or new connection (HTTP/1.1, or the
//! origin's shared HTTP/2 connection), the request sent on it, and the
//! failures that tell whether another try may follow.

use std::sync::Arc;

use http::header;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::conn::Conn;
use super::socket::Socket;
use super::{error, pool, Attempted, Failed, Link, Origin, Upstream};
use crate::http::body::RequestBody;
use crate::tls::TlsClient;

impl Upstream {
    /// One try on a pooled (or, with `fresh`, a new) connection. The flag in
    /// the error says whether the connection had been reused.
    pub(super) async fn attempt(
        &self,
        req: Request<RequestBody>,
        origin: &Origin<'_>,
        fresh: bool,
    ) -> Result<(Response<hyper::body::Incoming>, Option<Conn>), Attempted> {
        // An origin's open HTTP/2 connection takes every request but upgrades.
        let upgrade = req.headers().contains_key(header::UPGRADE);
        // Only TLS connections can be HTTP/2 (ALPN): plain origins skip the lookup.
        if !fresh && !upgrade && origin.tls.is_some() {
            if let Some(sender) = self.pool.h2(origin.key) {
                return self.send_h2(sender, req, origin, true).await;
            }
        }
        let pooled = if fresh {
            None
        } else {
            self.pool.checkout(origin.key)
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match self.conn_for(origin, fresh).await {
                Err(failed) => return Err((failed, false, Some(req))),
                Ok(Link::H1(conn)) => conn,
                Ok(Link::H2(sender, generation)) => {
                    if upgrade {
                        return Err((
                            Failed::Upgrade("the origin chose HTTP/2, which has no Upgrade"),
                            false,
                            None,
                        ));
                    }
                    self.pool
                        .share_h2(Arc::from(origin.key), sender.clone(), generation);
                    return self.send_h2(sender, req, origin, false).await;
                }
            },
        };
        let reused = conn.reused;
        if req.headers().contains_key(header::UPGRADE) {
            // After a 101 the socket belongs to the tunnel.
            conn.drive_elsewhere_with_upgrades();
        }
        // Counted once there is a connection to send on: a request that got
        // no slot in time, or no connection, never reached the origin.
        self.metrics.requests.inc();
        let ready = if conn.ready_now() {
            Ok(())
        } else {
            conn.ready().await
        };
        let sent = match ready {
            Ok(()) => conn.send(req).await,
            Err(e) => Err(e),
        };
        match sent {
            // Found out of step while the head was on its way: it may answer
            // an earlier request.
            Ok(_) if conn.peeker.watch.unsolicited() => Err((Failed::Desync, reused, None)),
            Ok(resp) => Ok((resp, Some(conn))),
            Err(e) => {
                // hyper hands the surplus bytes' error to the request queued
                // on the connection; it is still the origin's desync.
                if error::mentions(&e, "unexpected message") {
                    conn.peeker.watch.flag_unsolicited();
                }
                Err((Failed::Http(e), reused, None))
            }
        }
    }

    /// One request on the origin's HTTP/2 connection.
    pub(super) async fn send_h2(
        &self,
        mut sender: pool::H2Sender,
        mut req: Request<RequestBody>,
        origin: &Origin<'_>,
        reused: bool,
    ) -> Result<(Response<hyper::body::Incoming>, Option<Conn>), Attempted> {
        // RFC 9113 §8.3.1: the host asked for travels as :authority, not Host.
        let host = req.headers_mut().remove(header::HOST);
        let authority = host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .unwrap_or_else(|| origin.authority.clone());
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| {
                (
                    Failed::Upgrade("the request target does not fit HTTP/2"),
                    reused,
                    None,
                )
            })?;
        *req.version_mut() = Version::HTTP_2;
        self.metrics.requests.inc();
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        sent.map(|resp| (resp, None))
            .map_err(|e| (Failed::Http(e), reused, None))
    }

    /// A connection once the origin has a free slot: a new one, or one
    /// another request hands back while this one waits at the cap.
    pub(super) async fn conn_for(&self, origin: &Origin<'_>, fresh: bool) -> Result<Link, Failed> {
        let slots = self.connector.slots_for(origin.authority.as_str());
        loop {
            let returned = self.pool.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if !fresh {
                if let Some(conn) = self.pool.checkout(origin.key) {
                    return Ok(Link::H1(conn));
                }
            }
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => tokio::select! {
                    _ = returned => continue,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => continue,
                    },
                },
            };
            return self.open(origin, slot).await;
        }
    }

    /// A new connection (TLS first for `https://`) with hyper's HTTP/1.1
    /// client on it.
    pub(super) async fn open(
        &self,
        origin: &Origin<'_>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Link, Failed> {
        // Before the destination is checked: a reload that clears the pool
        // meanwhile keeps this connection from being parked.
        let generation = self.pool.generation();
        // Parsed only here: most requests find a pooled connection.
        let port = origin
            .authority
            .port_u16()
            .unwrap_or(if origin.tls.is_some() { 443 } else { 80 });
        let opened = self
            .connector
            .connect(slot, origin.authority.host(), port)
            .await
            .map_err(Failed::Connect)?;
        let unsolicited = self.error_counter("unsolicited");
        let (socket, peeker) = match origin.tls {
            None => Socket::new(opened.stream, unsolicited, self.suspects.clone()),
            Some(tls) => {
                let host = origin.authority.host();
                let name = TlsClient::server_name(host).map_err(Failed::Tls)?;
                let handshake = tls.connector().connect(name, opened.stream);
                let stream = match tokio::time::timeout(self.connect_timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(Failed::Tls(crate::tls::describe_failure(&e, host))),
                    Err(_) => return Err(Failed::Tls("the TLS handshake timed out".into())),
                };
                let (socket, peeker) = Socket::tls(stream, unsolicited, self.suspects.clone());
                // An origin that ignores ALPN gets HTTP/1.1, unless h2 was required.
                if tls.alpn() == crate::tls::Alpn::Http2 && !socket.alpn_h2() {
                    return Err(Failed::Tls(
                        "it did not agree to HTTP/2 (ALPN), which upstream_protocol requires"
                            .into(),
                    ));
                }
                (socket, peeker)
            }
        };
        if socket.alpn_h2() {
            let (sender, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(socket))
                .await
                .map_err(Failed::Http)?;
            // Shared by concurrent requests, so it runs in a task of its own.
            let slot = opened.slot;
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "origin HTTP/2 connection ended");
                }
                drop(slot);
            });
            return Ok(Link::H2(sender, generation));
        }
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(socket))
            .await
            .map_err(Failed::Http)?;
        Ok(Link::H1(Conn::new(
            sender,
            driver,
            peeker,
            Arc::from(origin.key),
            opened.slot,
            generation,
        )))
    }
}
