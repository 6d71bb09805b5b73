//! The binary: --check, --version, and a real run stopped by SIGTERM.

mod support;

use std::process::Command;

use support::Origin;

fn viaduct() -> Command {
    Command::new(env!("CARGO_BIN_EXE_viaduct"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("viaduct-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_rejects_an_unknown_key_naming_it_and_its_line() {
    let path = write_config(
        "unknown",
        "[server]\nname = \"v\"\n\n[cache]\ncapacity = \"1MiB\"\nmax_objekt_size = \"1KiB\"\n",
    );
    let out = viaduct()
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:6: ", path.display())), "{err}");
    assert!(err.contains("max_objekt_size"), "{err}");
}

#[test]
fn check_rejects_tls_settings_on_a_plain_upstream() {
    let path = write_config(
        "https",
        "[[route]]\nhost = \"*\"\nupstream = \"http://o.test\"\ntls_verify = false\n",
    );
    let out = viaduct()
        .args(["--check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4: ") && err.contains("https:// upstreams only"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_shipped_configuration() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = viaduct()
        .args(["--check", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_and_help() {
    let out = viaduct().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = viaduct().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("--check") && help.contains("Examples"),
        "{help}"
    );
}

#[tokio::test]
async fn binary_proxies_and_exits_zero_on_sigterm() {
    let origin = Origin::fixed("from the binary").await;
    let path = write_config(
        "run",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
            origin.addr
        ),
    );
    let (mut child, addr) = support::run_binary(&path, "viaduct listening").await;

    let mut req = support::get("/bin");
    req.headers_mut()
        .insert("host", "bin.test".parse().unwrap());
    let got = support::fetch(addr, req).await;
    assert_eq!(got.text(), "from the binary");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
