//! `baton units` from the command line: its output is the shipped `units/api.*` for the same
//! arguments (one renderer), and bad arguments get a clear error, exit 2, and write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .expect("run baton")
}

fn scratch(tag: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("units-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `baton units api --listen 127.0.0.1:8080 --config /etc/baton/api.toml` writes exactly
/// units/api.socket and units/api.service.
#[test]
fn units_writes_the_shipped_example_for_its_arguments() {
    let dir = scratch("example");
    let out = baton(&[
        "units",
        "api",
        "--listen",
        "127.0.0.1:8080",
        "--config",
        "/etc/baton/api.toml",
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    for f in ["api.socket", "api.service"] {
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("units").join(f))
                .unwrap();
        let written = std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(written, shipped, "{f}");
    }
}

#[test]
fn bad_arguments_are_refused_and_nothing_is_written() {
    let dir = scratch("bad");
    let d = dir.to_str().unwrap();
    for (args, want) in [
        (
            ["my app", "8080", "/etc/baton/a.toml", "/usr/bin/baton"],
            "invalid unit name \"my app\": ' ' is not allowed",
        ),
        (
            ["../etc", "8080", "/etc/baton/a.toml", "/usr/bin/baton"],
            "invalid unit name \"../etc\": '/' is not allowed",
        ),
        (
            ["a", "localhost:80", "/etc/baton/a.toml", "/usr/bin/baton"],
            "invalid --listen \"localhost:80\": not an address; give a port (8080), ip:port",
        ),
        (
            ["a", "::1:80", "/etc/baton/a.toml", "/usr/bin/baton"],
            "an IPv6 address goes in brackets",
        ),
        (
            ["a", "8080", "a.toml", "/usr/bin/baton"],
            "--config \"a.toml\" is relative: systemd needs an absolute path",
        ),
        (
            ["a", "8080", "/etc/baton/a.toml", "target/release/baton"],
            "--baton \"target/release/baton\" is relative",
        ),
    ] {
        let [name, listen, config, bin] = args;
        let out = baton(&[
            "units",
            name,
            "--listen",
            listen,
            "--config",
            config,
            "--baton",
            bin,
            "--output-dir",
            d,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(err.starts_with("baton units: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: printed nothing");
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
}

/// Every address form systemd's ListenStream= takes (and baton documents) is accepted.
#[test]
fn listen_forms_are_accepted() {
    let out = baton(&[
        "units",
        "shop",
        "--listen",
        "8080",
        "--listen",
        "127.0.0.1:8081",
        "--listen",
        "[::1]:8082",
        "--listen",
        "/run/shop.sock",
        "--config",
        "/etc/baton/shop.toml",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ListenStream=8080\nListenStream=127.0.0.1:8081\nListenStream=[::1]:8082\nListenStream=/run/shop.sock\n"),
        "{text}"
    );
}
