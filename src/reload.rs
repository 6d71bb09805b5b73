//! Configuration reload (SIGHUP, `POST /reload`): the file is read and
//! checked exactly as at start; if it is invalid nothing changes and the
//! error (with `file:line`) is the answer. If it is valid, what can change in
//! place does, for new requests: reverse routes and upstream groups, forward
//! admission and deny rules, proxy authentication, the PAC file, CONNECT
//! ports, and the TLS certificates. The cache and its entries, the connection pools, the
//! listeners, metrics and logs stay. Tables whose changes need a restart are
//! named in the answer and the log, and keep their old values.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::metrics::{unix_now, ResultLabels};
use crate::proxy::Handler;
use crate::tls::TlsServer;

pub struct Reloader {
    path: Option<PathBuf>,
    handler: Arc<Handler>,
    tls: Option<Arc<TlsServer>>,
    /// The configuration in use, to tell what changed.
    current: Mutex<Config>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        handler: Arc<Handler>,
        tls: Option<Arc<TlsServer>>,
        config: Config,
    ) -> Reloader {
        Reloader {
            path,
            handler,
            tls,
            current: Mutex::new(config),
        }
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
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let (errors, _) = crate::tls::check(&new.tls);
        if let Some(first) = errors.first() {
            return Err(first.clone());
        }
        // One reload at a time: the comparison and the swap go together.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let kept = needs_restart(&current, &new);
        if let Some(tls) = &self.tls {
            tls.replace(new.tls.certificate.clone())?;
        }
        self.handler.reload(&new)?;
        self.handler.metrics().config_loaded.set(unix_now());
        let mut applied = new;
        // What needs a restart keeps running as it was; only what changed
        // in place is remembered as current.
        restore_restart_only(&mut applied, &current);
        *current = applied;
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

/// The parts of `new` that differ from `old` and cannot change in place.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut kept = Vec::new();
    if differs(&old.server, &new.server) {
        kept.push("[server]");
    }
    if differs(&old.admin, &new.admin) {
        kept.push("[admin]");
    }
    if differs(&old.cache, &new.cache) {
        kept.push("[cache]");
    }
    if differs(&old.log, &new.log) {
        kept.push("[log]");
    }
    if differs(&old.tls.listen, &new.tls.listen)
        || differs(&old.tls.handshake_timeout, &new.tls.handshake_timeout)
    {
        kept.push("[tls] listen/handshake_timeout");
    }
    let pool = |c: &Config| {
        let mut u = c.upstream.clone();
        u.groups.clear();
        u
    };
    if differs(&pool(old), &pool(new)) {
        kept.push("[upstream]");
    }
    if differs(
        &old.forward.tunnel_idle_timeout,
        &new.forward.tunnel_idle_timeout,
    ) {
        kept.push("[forward] tunnel_idle_timeout");
    }
    kept
}

/// Puts back into `applied` what a restart alone can change.
fn restore_restart_only(applied: &mut Config, running: &Config) {
    applied.server = running.server.clone();
    applied.admin = running.admin.clone();
    applied.cache = running.cache.clone();
    applied.log = running.log.clone();
    applied.tls.listen = running.tls.listen.clone();
    applied.tls.handshake_timeout = running.tls.handshake_timeout;
    let groups = std::mem::take(&mut applied.upstream.groups);
    applied.upstream = running.upstream.clone();
    applied.upstream.groups = groups;
    applied.forward.tunnel_idle_timeout = running.forward.tunnel_idle_timeout;
}
