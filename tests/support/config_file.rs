//! A configuration file the proxy is started from and reloads re-read.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{fetch, Got};

/// A `proxy.toml` in the temp directory, removed when dropped.
pub struct ConfigFile(pub PathBuf);

/// Listeners on port 0, the access log off, loopback origins allowed.
pub const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[forward]\nallow_loopback = true\n";

impl ConfigFile {
    pub fn new(tag: &str) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("viaduct-reload-{tag}-{}.toml", std::process::id()));
        ConfigFile(path)
    }

    /// `HEAD` then `body`.
    pub fn write(&self, body: &str) {
        self.write_whole(&format!("{HEAD}{body}"));
    }

    /// Exactly `text`.
    pub fn write_whole(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `POST /reload` on the admin listener.
pub async fn reload(admin: SocketAddr) -> Got {
    let req = http::Request::post(format!("http://{admin}/reload"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    fetch(admin, req).await
}
