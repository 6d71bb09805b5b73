//! The connector under the pool: TCP with a connect timeout, a count of new
//! connections (so reuse is measurable), and a hard cap on connections open to
//! one origin. The cap lives here, not per request, because the pool may finish
//! a connect in the background after a request was served by an idle connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::guard::Guard;
use crate::proxy::BoxError;

/// Forgetting idle per-origin slots keeps the map small for a forward proxy
/// that talks to many hosts.
const PRUNE_ABOVE: usize = 1024;

#[derive(Clone)]
pub struct CountingConnector {
    http: HttpConnector,
    shared: Arc<Shared>,
    /// Forward traffic: resolve and check every destination, then connect to
    /// exactly the checked address.
    guard: Option<Arc<Guard>>,
}

struct Shared {
    opened: prometheus_client::metrics::counter::Counter,
    max_per_host: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl CountingConnector {
    pub fn new(
        http: HttpConnector,
        max_per_host: usize,
        opened: prometheus_client::metrics::counter::Counter,
        guard: Option<Arc<Guard>>,
    ) -> CountingConnector {
        CountingConnector {
            http,
            guard,
            shared: Arc::new(Shared {
                opened,
                max_per_host,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connections opened since start.
    pub fn opened(&self) -> u64 {
        self.shared.opened.get()
    }
}

impl Shared {
    fn slots_for(&self, uri: &Uri) -> Arc<Semaphore> {
        let key = uri.authority().map_or("", |a| a.as_str());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sem) = slots.get(key) {
            return sem.clone();
        }
        if slots.len() >= PRUNE_ABOVE {
            let max = self.max_per_host;
            slots.retain(|_, sem| sem.available_permits() < max);
        }
        let sem = Arc::new(Semaphore::new(self.max_per_host));
        slots.insert(key.to_string(), sem.clone());
        sem
    }
}

impl Service<Uri> for CountingConnector {
    type Response = CountedStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CountedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let shared = self.shared.clone();
        let guard = self.guard.clone();
        Box::pin(async move {
            let slot = shared.slots_for(&uri).acquire_owned().await?;
            let io = match guard {
                None => http.call(uri).await?,
                Some(guard) => {
                    let host = uri.host().unwrap_or_default();
                    let port = uri.port_u16().unwrap_or(80);
                    let mut last = None;
                    let mut connected = None;
                    for addr in guard.resolve(host, port).await? {
                        let exact: Uri = format!("http://{addr}").parse()?;
                        match http.call(exact).await {
                            Ok(io) => {
                                connected = Some(io);
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    match (connected, last) {
                        (Some(io), _) => io,
                        (None, Some(e)) => return Err(e.into()),
                        (None, None) => return Err("no address to connect to".into()),
                    }
                }
            };
            shared.opened.inc();
            Ok(CountedStream { io, _slot: slot })
        })
    }
}

/// An origin connection; its slot frees when the connection closes.
pub struct CountedStream {
    io: TokioIo<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl Connection for CountedStream {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
