//! Configuration reload (SIGHUP, `POST /reload`): the file is read and
//! checked exactly as at start; if it is invalid nothing changes and the
//! error (with `file:line`) is the answer. If it is valid, what can change in
//! place does, for new requests and connections: reverse routes and
//! upstream groups, forward admission, authentication and deny rules, the
//! PAC file, CONNECT ports, TLS certificates, the cache's tunable settings,
//! the access log and the log level, request limits and connection
//! timeouts, and the listeners themselves (kept, added or drained by
//! address). The cache keeps every entry. Keys whose change needs a restart
//! are named in the answer and the log, and keep their old values.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::Config;
use crate::metrics::{unix_now, ResultLabels};
use crate::proxy::{Handler, Listening};
use crate::server::{ConnectionSettings, Listeners};
use crate::tls::TlsServer;

/// Changes the log level (`[log] level`) of the running process; the
/// binary installs it, a library user may.
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL: OnceLock<LogLevelHook> = OnceLock::new();

/// Installs the hook a reload calls when `[log] level` changes (once per
/// process; later calls are ignored).
pub fn set_log_level_hook(hook: LogLevelHook) {
    let _ = LOG_LEVEL.set(hook);
}

pub struct Reloader {
    path: Option<PathBuf>,
    handler: Arc<Handler>,
    listeners: Arc<Listeners>,
    /// The configuration in use, to tell what changed.
    current: Mutex<Config>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        handler: Arc<Handler>,
        listeners: Arc<Listeners>,
        config: Config,
    ) -> Reloader {
        Reloader {
            path,
            handler,
            listeners,
            current: Mutex::new(config),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Config> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `[server] shutdown_timeout` as last loaded.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        self.current().server.shutdown_timeout.get()
    }

    /// The proxy's plain or TLS addresses accepting now.
    pub fn listening(&self, tls: bool) -> Vec<std::net::SocketAddr> {
        self.listeners.addrs(tls)
    }

    /// One reload; the answer is a one-line report or the reason nothing changed.
    pub fn reload(&self) -> Result<String, String> {
        let result = self.apply();
        let metrics = self.handler.metrics();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: outcome })
            .inc();
        match &result {
            Ok(report) => tracing::info!("configuration reloaded: {report}"),
            Err(e) => tracing::error!("configuration not reloaded, the previous one stays: {e}"),
        }
        result
    }

    fn apply(&self) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err("the proxy was started without a configuration file".into());
        };
        let mut new = Config::load(path).map_err(|e| e.to_string())?;
        let (errors, _) = crate::tls::check(&new.tls);
        if let Some(first) = errors.first() {
            return Err(first.clone());
        }
        // One reload at a time: the comparison and the swap go together.
        let mut current = self.current();
        // What needs a restart keeps running as it was, so that everything
        // below is built from one consistent configuration.
        let mut kept = keep_restart_only(&current, &mut new);
        // Nothing has changed yet; a failure from here to the swap leaves
        // the running configuration whole (a bound socket is closed again).
        let pending = self
            .listeners
            .prepare(&new.server.listen, &new.tls.listen)?;
        match self.listeners.tls() {
            Some(tls) => {
                tls.replace(new.tls.certificate.clone())?;
            }
            None if pending.wants_tls() => {
                let server = TlsServer::new(&new.tls, new.server.http2)?;
                self.listeners.set_tls(Arc::new(server));
            }
            None => {}
        }
        let listening = Listening {
            addrs: pending.addrs(),
            https_port: pending.https_port(),
        };
        let log_changed =
            current.log.access != new.log.access || current.log.format != new.log.format;
        self.handler.reload(&new, &listening, log_changed)?;
        let settings = ConnectionSettings::new(&new.server, new.tls.handshake_timeout.get());
        self.listeners
            .commit(pending, settings, new.server.shutdown_timeout.get());
        if current.log.level != new.log.level {
            let applied = match LOG_LEVEL.get() {
                Some(set) => set(&new.log.level),
                None => Err("no log level control in this process".into()),
            };
            if let Err(e) = applied {
                tracing::warn!("[log] level not changed: {e}");
                new.log.level = current.log.level.clone();
                kept.push("[log] level");
            }
        }
        self.handler.metrics().config_loaded.set(unix_now());
        *current = new;
        Ok(if kept.is_empty() {
            format!("{} applied", path.display())
        } else {
            format!(
                "{} applied; changes to {} need a restart and were not applied",
                path.display(),
                kept.join(", ")
            )
        })
    }
}

/// Puts back into `new` the running values of the keys only a restart can
/// change, and names those that differed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    // Compared by their Debug form: every config type has one, and a
    // difference there is a difference in value.
    macro_rules! restart_only {
        ($($name:literal => $($field:ident).+;)*) => {$(
            if format!("{:?}", running.$($field).+) != format!("{:?}", new.$($field).+) {
                kept.push($name);
                new.$($field).+ = running.$($field).+.clone();
            }
        )*};
    }
    restart_only! {
        // Used in Via, Cache-Status and the metrics' labels from start.
        "[server] name" => server.name;
        // The connection semaphore and the runtime are sized at start.
        "[server] max_connections" => server.max_connections;
        "[server] workers" => server.workers;
        // ALPN and the HTTP/2 builders are set up at start.
        "[server] http2" => server.http2;
        "[admin] listen" => admin.listen;
        "[admin] token" => admin.token;
        // moka cannot resize a built cache, nor change a time-to-live.
        "[cache] capacity" => cache.capacity;
        "[cache] hit_for_miss" => cache.hit_for_miss;
        // The Redis connections and their writer are set up at start.
        "[cache.shared]" => cache.shared;
        // The disk tier's index and writers are set up at start.
        "[cache.disk]" => cache.disk;
        // The default connection pools keep their settings and their
        // connections (groups with their own settings get new pools).
        "[upstream] connect_timeout" => upstream.connect_timeout;
        "[upstream] response_header_timeout" => upstream.response_header_timeout;
        "[upstream] body_idle_timeout" => upstream.body_idle_timeout;
        "[upstream] idle_timeout" => upstream.idle_timeout;
        "[upstream] max_idle_per_host" => upstream.max_idle_per_host;
        "[upstream] max_connections_per_host" => upstream.max_connections_per_host;
        "[upstream] tls_ca" => upstream.tls_ca;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_named_and_kept() {
        let running = Config::builtin();
        let mut new = Config::builtin();
        new.server.name = "other".into();
        new.cache.capacity = crate::config::Size(1);
        new.cache.x_cache = !running.cache.x_cache;
        new.upstream.idle_timeout = crate::config::Dur(std::time::Duration::from_secs(1));
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(
            kept,
            [
                "[server] name",
                "[cache] capacity",
                "[upstream] idle_timeout"
            ]
        );
        assert_eq!(new.server.name, running.server.name);
        assert_eq!(new.cache.capacity.bytes(), running.cache.capacity.bytes());
        assert_eq!(
            new.upstream.idle_timeout.get(),
            running.upstream.idle_timeout.get()
        );
        // What can change in place is left as the file says.
        assert_ne!(new.cache.x_cache, running.cache.x_cache);
    }
}
