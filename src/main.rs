//! `viaduct`: command line → configuration → tracing → serve until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cache_cli;

/// mimalloc: fewer bytes per small allocation and less fragmentation than the
/// system allocator for a cache of many small objects (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use viaduct::{Config, Proxy};

#[derive(Parser, Debug)]
#[command(
    name = "viaduct",
    version,
    about = "A forward and reverse caching HTTP proxy",
    after_help = "\
Examples:
  viaduct                              run with ./proxy.toml (built-in defaults if absent)
  viaduct -c /etc/viaduct/proxy.toml   run with another configuration
  viaduct --check -c proxy.toml        validate a configuration and exit
  curl -x http://127.0.0.1:8080 http://example.test/   use it as a forward proxy
  echo -n 'secret' | viaduct hash-password             a hash for [forward.auth] users
  viaduct cache ls --tag shoes                         stored URLs tagged `shoes` (admin API)
  viaduct cache show http://example.test/              what is stored for one URL
  viaduct cache purge --prefix http://example.test/img/ --soft

Logging: RUST_LOG (e.g. RUST_LOG=debug) overrides [log] level."
)]
struct Args {
    /// Configuration file [default: ./proxy.toml, built-in defaults if absent].
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Validate the configuration and exit: 0 when valid, 2 with `file:line: message` when not.
    #[arg(long)]
    check: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read a password on stdin and print its bcrypt hash, for `[forward.auth] users`.
    HashPassword,
    /// Inspect and purge the cache of a running proxy through its admin API:
    /// `cache ls`, `cache show URL`, `cache purge`.
    Cache(cache_cli::CacheArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::Cache(cache)) => {
            return cache_cli::run(cache, args.config.is_some(), || load(&args))
        }
        None => {}
    }
    let config = match load(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        // Certificate files are part of the configuration: unreadable,
        // mismatched or unparsable ones fail the check, expired ones warn.
        let (errors, warnings) = viaduct::tls::check(&config.tls);
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        if !errors.is_empty() {
            for error in &errors {
                eprintln!("{error}");
            }
            return ExitCode::from(2);
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    init_tracing(&config.log.level);

    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, config_path(&args)))
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("cannot read the password: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("no password on stdin");
        return ExitCode::from(2);
    }
    match bcrypt::hash(password, bcrypt::DEFAULT_COST) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &Args) -> Result<Config, String> {
    match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => {
            let default = PathBuf::from("proxy.toml");
            if default.exists() {
                Config::load(&default).map_err(|e| e.to_string())
            } else {
                Ok(Config::builtin())
            }
        }
    }
}

fn init_tracing(level: &str) {
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    // A reload that changes `[log] level` swaps the filter, unless RUST_LOG
    // chose it (then the environment keeps winning, as at start).
    viaduct::set_log_level_hook(Box::new(move |level| {
        if overridden {
            return Err("RUST_LOG is set and takes precedence".into());
        }
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("invalid level {level:?}: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
}

/// The file the configuration came from (reloads re-read it), if any.
fn config_path(args: &Args) -> Option<PathBuf> {
    match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from("proxy.toml")).filter(|p| p.exists()),
    }
}

async fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    // Registered before the listeners exist, so a signal sent as soon as we
    // announce ourselves is never missed.
    let stop = match StopSignal::register() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("viaduct: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let routes = config.routes.len();
    let started = match path {
        Some(path) => Proxy::start_loaded(config, path).await,
        None => Proxy::start(config).await,
    };
    let running = match started {
        Ok(running) => running,
        Err(e) => {
            eprintln!("viaduct: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in running.addrs() {
        tracing::info!(%addr, routes, "viaduct listening");
    }
    for addr in running.tls_addrs() {
        tracing::info!(%addr, routes, "viaduct listening (TLS)");
    }
    tracing::info!(addr = %running.admin_addr(), "admin listening");
    stop.wait(&running).await;
    tracing::info!("shutting down: finishing in-flight requests");
    if running.shutdown().await {
        tracing::info!("all connections finished");
    }
    ExitCode::SUCCESS
}

/// SIGINT or SIGTERM stop; SIGHUP reloads the configuration file.
#[cfg(unix)]
struct StopSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignal {
    fn register() -> std::io::Result<StopSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn wait(mut self, running: &viaduct::Running) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return,
                _ = self.terminate.recv() => return,
                // Reports (and errors) are logged by the reload itself.
                _ = self.hangup.recv() => {
                    let _ = running.reload();
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct StopSignal;

#[cfg(not(unix))]
impl StopSignal {
    fn register() -> std::io::Result<StopSignal> {
        Ok(StopSignal)
    }

    async fn wait(self, _running: &viaduct::Running) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
