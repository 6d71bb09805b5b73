//! viaduct: a forward and reverse caching HTTP proxy.
//!
//! The binary is a thin wrapper around [`Proxy::start`]; tests start the proxy
//! the same way, in-process, on port 0.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod cache;
pub mod config;
pub(crate) mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod server;
pub(crate) mod sharded;
pub mod tls;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

pub use config::Config;
/// The answer built from a stored entry, for the micro-benchmarks.
pub use proxy::stored_response;
pub use reload::{set_log_level_hook, LogLevelHook};

use proxy::Handler;
use server::{ConnectionSettings, Phase};

pub struct Proxy;

impl Proxy {
    /// Loads `path` and starts; `Running::reload` (SIGHUP, `POST /reload`)
    /// then re-reads it.
    pub async fn start_from(path: &std::path::Path) -> Result<Running, StartError> {
        let config = Config::load(path).map_err(|e| StartError(e.to_string()))?;
        Proxy::start_with(config, Some(path.to_path_buf())).await
    }

    /// Starts with `config`, already loaded from `path`, which reloads re-read.
    pub async fn start_loaded(
        config: Config,
        path: std::path::PathBuf,
    ) -> Result<Running, StartError> {
        Proxy::start_with(config, Some(path)).await
    }

    /// Binds every listener and starts serving. Must run inside a tokio
    /// runtime. Without a file there is nothing to reload from.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        Proxy::start_with(config, None).await
    }

    async fn start_with(
        config: Config,
        path: Option<std::path::PathBuf>,
    ) -> Result<Running, StartError> {
        let (listeners, addrs) = bind(&config.server.listen).await?;
        let (tls_listeners, tls_addrs) = bind(&config.tls.listen).await?;
        let tls = if tls_listeners.is_empty() {
            None
        } else {
            Some(Arc::new(
                tls::TlsServer::new(&config.tls, config.server.http2).map_err(StartError)?,
            ))
        };
        let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .map_err(|e| {
                StartError(format!(
                    "cannot listen on {} (admin): {e}",
                    config.admin.listen
                ))
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| StartError(format!("cannot read the admin address: {e}")))?;
        // Every port of ours, plain and TLS: never a destination.
        let own: Vec<SocketAddr> = addrs.iter().chain(&tls_addrs).copied().collect();
        let handler = Arc::new(
            Handler::new(
                &config,
                own,
                admin_addr,
                tls_addrs.first().map(|a| a.port()),
            )
            .map_err(|e| StartError(e.to_string()))?,
        );
        let settings = ConnectionSettings::new(&config.server, config.tls.handshake_timeout.get());
        // Validated to at most 2^24, well inside both u32 and the semaphore's limit.
        let max = config.server.max_connections.min(Semaphore::MAX_PERMITS);
        let limit = Arc::new(Semaphore::new(max));
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let shared = Arc::new(server::Shared {
            limit: limit.clone(),
            handler: handler.clone(),
            settings: arc_swap::ArcSwap::from_pointee(settings),
        });
        let plain = config
            .server
            .listen
            .iter()
            .copied()
            .zip(listeners)
            .collect();
        let secure = config
            .tls
            .listen
            .iter()
            .copied()
            .zip(tls_listeners)
            .collect();
        let listeners =
            Arc::new(server::Listeners::start(shared, plain, secure, tls).map_err(StartError)?);
        let reloader = Arc::new(reload::Reloader::new(
            path,
            handler.clone(),
            listeners.clone(),
            config.clone(),
        ));
        let admin = Arc::new(admin::Admin::new(
            handler.cache_handle(),
            handler.metrics(),
            config.admin.token.clone(),
            config.server.name.clone(),
            phase_rx.clone(),
            handler.clone(),
            reloader.clone(),
        ));
        tokio::spawn(admin.serve(admin_listener));
        Ok(Running {
            addrs,
            tls_addrs,
            listeners,
            reloader,
            admin_addr,
            phase,
            limit,
            max: max as u32,
            handler,
        })
    }
}

/// Binds every address; the listeners and the addresses they got.
async fn bind(
    addrs: &[SocketAddr],
) -> Result<(Vec<tokio::net::TcpListener>, Vec<SocketAddr>), StartError> {
    let listeners = server::bind_all(addrs).await.map_err(StartError)?;
    let bound = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()
        .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
    Ok((listeners, bound))
}

/// A proxy that is serving. Dropping it without [`Running::shutdown`] leaves the
/// listeners running until the runtime ends.
pub struct Running {
    /// The addresses bound at start (a reload may add and remove some:
    /// see `listening`).
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    listeners: Arc<server::Listeners>,
    reloader: Arc<reload::Reloader>,
    admin_addr: SocketAddr,
    /// The admin listener's view (`/readyz`); the proxy's listeners each
    /// have their own.
    phase: watch::Sender<Phase>,
    limit: Arc<Semaphore>,
    max: u32,
    handler: Arc<Handler>,
}

impl Running {
    /// The proxy addresses bound at start, in the order of `[server] listen`.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS addresses bound at start, in the order of `[tls] listen`.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The plain (`tls = false`) or TLS addresses accepting now, after any
    /// reloads.
    pub fn listening(&self, tls: bool) -> Vec<SocketAddr> {
        self.listeners.addrs(tls)
    }

    /// Re-reads the TLS certificate files (SIGHUP): new handshakes use the
    /// new certificates; on an error the old ones stay and the error names
    /// the file. `Ok(0)` without TLS listeners.
    pub fn reload_tls(&self) -> Result<usize, String> {
        match self.listeners.tls() {
            Some(tls) => tls.reload(),
            None => Ok(0),
        }
    }

    /// Re-reads the configuration file and applies it to new requests (see
    /// `reload.rs`); the answer says what changed, or why nothing did.
    pub fn reload(&self) -> Result<String, String> {
        self.reloader.reload()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The first bound proxy address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The response cache (for inspection: size, entries).
    pub fn cache(&self) -> &cache::Cache {
        self.handler.cache()
    }

    /// New connections opened to origins since start.
    pub fn upstream_connections_opened(&self) -> u64 {
        self.handler.upstream_connections_opened()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish for up
    /// to `[server] shutdown_timeout`, then close what is left, and write out the
    /// access log. Returns whether every connection finished in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.phase.send(Phase::Draining);
        self.listeners.broadcast(Phase::Draining);
        self.listeners.stopped().await;
        let timeout = self.reloader.shutdown_timeout();
        let drained = tokio::time::timeout(timeout, self.limit.acquire_many(self.max))
            .await
            .is_ok();
        if !drained {
            tracing::warn!("shutdown timeout reached; closing remaining connections");
            let _ = self.phase.send(Phase::Stop);
            self.listeners.broadcast(Phase::Stop);
        }
        // Responses queued for the disk tier are written before we go, so a
        // graceful restart keeps them.
        if let Some(disk) = &self.handler.cache().disk {
            disk.flush(std::time::Duration::from_secs(5)).await;
        }
        // The lines of finished requests may still sit in per-thread batches.
        if !self.handler.flush_access_log().await {
            tracing::warn!("the access log writer did not finish writing in time");
        }
        drained
    }
}

/// Why the proxy could not start (a listener could not bind, the log could not open).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}
