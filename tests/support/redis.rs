//! A real redis-server for the shared tier's tests: started on a free port
//! of 127.0.0.1 without persistence, stopped (SIGKILL) and restarted on
//! the same port at will, killed when dropped. CI installs redis-server
//! (`.ci/run`); a machine without it fails these tests with that hint.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut server = RedisServer { addr, child: None };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts it again on its port (after `kill`), and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is needed by the shared tier tests: apt-get install -y redis-server",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: gone at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs redis-cli against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan"])
            .lines()
            .map(str::to_string)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node on `redis` with one catch-all route to `origin`, tags read from
/// `Surrogate-Key`, and `extra` appended to `[cache.shared]` (so it may add
/// keys there, or whole tables after them).
pub async fn shared_node(
    name: &str,
    redis: &RedisServer,
    origin: SocketAddr,
    extra: &str,
) -> viaduct::Running {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nname = \"{name}\"\nshutdown_timeout = \"2s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [cache]\ntag_fields = [\"surrogate-key\"]\n\
         [cache.shared]\nredis = [\"{}\"]\ntimeout = \"50ms\"\n{extra}\n\
         [[route]]\nhost = \"*\"\nupstream = \"http://{origin}\"\n",
        redis.url()
    );
    let config = viaduct::Config::from_toml(&text, "node.toml").unwrap();
    let node = super::start(config).await;
    wait_connected(node.admin_addr()).await;
    node
}

/// Waits until the node's `viaduct_shared_up` is 1 (or fails the test).
pub async fn wait_connected(admin: SocketAddr) {
    let deadline = Instant::now() + super::PATIENCE;
    loop {
        let scrape = super::scrape(admin).await;
        if super::value(&scrape, "viaduct_shared_up", &[]) == 1.0 {
            return;
        }
        assert!(Instant::now() < deadline, "node never connected to Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl RedisServer {
    /// Waits until the URL whose cache key ends with `suffix` has at least
    /// `fields` hash fields in Redis (a record per variant, plus `v` when
    /// it varies): writes happen after the answer, in the background.
    pub async fn wait_stored(&self, suffix: &str, fields: usize) {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let key = self.keys().into_iter().find(|k| k.ends_with(suffix));
            if let Some(key) = key {
                let n: usize = self.cli(&["HLEN", &key]).trim().parse().unwrap_or(0);
                if n >= fields {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{suffix} never stored in Redis");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
