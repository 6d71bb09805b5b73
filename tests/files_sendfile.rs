//! File bodies sent by the kernel (`sendfile`) on plain HTTP/1.x
//! connections, and read and written as bytes on h2c and TLS: every way a
//! client can ask gets the file's bytes exactly, in order, on a connection
//! that goes on serving (`server/zero_copy.rs`).

mod support;

use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use support::pki::Pki;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A directory with `big.bin` (over 3 MiB: more than one sendfile part,
/// not kept in memory), `mid.bin` (200 KiB: kept in memory, sent from its
/// open handle) and `small.txt`, all of distinct bytes.
struct Site {
    dir: PathBuf,
    big: Bytes,
    mid: Bytes,
}

impl Site {
    fn new(name: &str) -> Site {
        let dir =
            std::env::temp_dir().join(format!("viaduct-sendfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Offsets into the pattern differ, so a part sent from the wrong
        // place is seen.
        let big = pattern((3 << 20) + 1234 + 7).slice(7..);
        let mid = pattern(200 * 1024 + 3).slice(3..);
        std::fs::write(dir.join("big.bin"), &big).unwrap();
        std::fs::write(dir.join("mid.bin"), &mid).unwrap();
        std::fs::write(dir.join("small.txt"), "small\n").unwrap();
        Site { dir, big, mid }
    }

    fn config(&self) -> viaduct::Config {
        let mut config = base_config();
        config.routes = vec![route_toml(&format!(
            "host = \"*\"\npath_prefix = \"/\"\nroot = \"{}\"",
            self.dir.display()
        ))];
        config
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one response (head and a Content-Length body) from `stream`.
async fn response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = vec![0u8; 256 * 1024];
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("a head within patience")
            .unwrap();
        assert!(n > 0, "closed before a head");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    while pending.len() < head_end + len {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the body within patience")
            .unwrap();
        assert!(n > 0, "closed mid-body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[head_end..head_end + len].to_vec();
    pending.drain(..head_end + len);
    (head, body)
}

#[tokio::test]
async fn pipelined_file_bodies_on_one_plain_connection_arrive_exact_and_in_order() {
    pipelined(true).await;
}

#[tokio::test]
async fn with_sendfile_off_plain_connections_get_the_same_bytes() {
    pipelined(false).await;
}

async fn pipelined(sendfile: bool) {
    let site = Site::new(&format!("pipelined-{sendfile}"));
    let mut config = site.config();
    config.server.sendfile = sendfile;
    let proxy = start(config).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    // Twice: the second round serves big.bin and mid.bin from what the
    // first left open and kept.
    for round in 0..2 {
        let asks = [
            ("/big.bin", ""),
            ("/small.txt", ""),
            ("/mid.bin", "range: bytes=70000-150000\r\n"),
            ("/big.bin", "range: bytes=1048000-2100000\r\n"),
            ("/mid.bin", ""),
            ("/big.bin", "range: bytes=-1000\r\n"),
        ];
        let mut requests = String::new();
        for (path, extra) in asks {
            requests.push_str(&format!(
                "GET {path} HTTP/1.1\r\nHost: s.test\r\n{extra}\r\n"
            ));
        }
        stream.write_all(requests.as_bytes()).await.unwrap();
        let big_len = site.big.len();
        let expected: [(&str, &[u8]); 6] = [
            ("200", &site.big[..]),
            ("200", b"small\n"),
            ("206", &site.mid[70000..=150000]),
            ("206", &site.big[1048000..=2100000]),
            ("200", &site.mid[..]),
            ("206", &site.big[big_len - 1000..]),
        ];
        let mut pending = Vec::new();
        for (i, (status, body)) in expected.iter().enumerate() {
            let (head, got) = response(&mut stream, &mut pending).await;
            assert!(
                head.starts_with(&format!("http/1.1 {status}")),
                "round {round}, answer {i}: {head}"
            );
            assert!(got == *body, "round {round}, answer {i}: the bytes differ");
        }
    }
    // HTTP/1.0, which closes after the response.
    let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
    old.write_all(b"GET /big.bin HTTP/1.0\r\nHost: s.test\r\n\r\n")
        .await
        .unwrap();
    let (head, got) = response(&mut old, &mut Vec::new()).await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(got == site.big, "HTTP/1.0: the bytes differ");
    proxy.shutdown().await;
}

#[tokio::test]
async fn h2c_gets_the_same_bytes_as_plain_http1() {
    let site = Site::new("h2c");
    let proxy = start(site.config()).await;
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, range, expected) in [
        ("/big.bin", None, &site.big[..]),
        ("/mid.bin", None, &site.mid[..]),
        (
            "/big.bin",
            Some("bytes=1048000-2100000"),
            &site.big[1048000..=2100000],
        ),
    ] {
        let mut req = Request::get(format!("http://s.test{path}"));
        if let Some(range) = range {
            req = req.header("range", range);
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body == expected, "{path} {range:?}: the bytes differ");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn http1_over_tls_gets_the_same_bytes_as_plain_http1() {
    let site = Site::new("tls");
    let pki = Pki::new("sendfile");
    let leaf = pki.leaf("site", &["s.test"]);
    let mut config = site.config();
    config.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.tls.certificate = vec![viaduct::config::CertificateConfig {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        hosts: None,
    }];
    let proxy = start(config).await;
    let tcp = TcpStream::connect(proxy.tls_addrs()[0]).await.unwrap();
    let name = ServerName::try_from("s.test".to_string()).unwrap();
    let tls = pki
        .client(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (path, expected) in [("/big.bin", &site.big), ("/mid.bin", &site.mid)] {
        let req = Request::get(path)
            .header("host", "s.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body == *expected, "{path} over TLS: the bytes differ");
    }
    proxy.shutdown().await;
}
