//! Running it as a service, against the real binaries: the configuration file
//! (`--config`, `--print-config`, errors naming the key, flags over the file), `--version`
//! on every binary and `--log-format json`.

use std::path::Path;
use std::process::{Command, Output};

use kv_proto::{ControlRequest as Req, ErrorCode as E};
use kv_tests::server::server_bin;
use kv_tests::ServerProcess;

/// Runs the server binary with `args` (for the modes that exit at once).
fn run_server(args: &[&str]) -> Output {
    Command::new(server_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run kv-server")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config file");
}

fn print_config(file: &Path, extra: &[&str]) -> String {
    let f = file.to_str().expect("utf-8 path");
    let mut args = vec!["--config", f, "--print-config"];
    args.extend_from_slice(extra);
    let o = run_server(&args);
    assert!(o.status.success(), "--print-config failed: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn print_config_round_trips_and_shows_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let data = dir.path().join("data");
    write(
        &file,
        &format!(
            "# a comment\nlisten = \"127.0.0.1:9\"\ndata_dir = {:?}\nudp_ports = \"40000-40100\"\n\
             peer_timeout = 0.5\ndefault_perms = 0x28\nmax_members = 3\nallow_unsigned = true\n\
             metrics = \"127.0.0.1:9185\"\nlog_format = \"json\"\n",
            data.to_str().unwrap()
        ),
    );
    let first = print_config(&file, &[]);
    for line in [
        "listen = \"127.0.0.1:9\"",
        "udp_ports = \"40000-40100\"",
        "peer_timeout = 0.5",
        "default_perms = 40",
        "max_members = 3",
        "allow_unsigned = true",
        "metrics = \"127.0.0.1:9185\"",
        "log_format = \"json\"",
        // Keys the file did not give are printed with their defaults.
        "max_channels = 1024",
        "request_timeout = 10.0",
        "register_rate = 30",
    ] {
        assert!(first.lines().any(|l| l == line), "{line:?} not in\n{first}");
    }
    // What it printed, loaded as the file, prints the same again.
    let again = dir.path().join("printed.toml");
    write(&again, &first);
    assert_eq!(print_config(&again, &[]), first);

    // The defaults alone round-trip too (an empty file).
    let empty = dir.path().join("empty.toml");
    write(&empty, "");
    let defaults = print_config(&empty, &["--data-dir", data.to_str().unwrap()]);
    assert!(defaults.contains("listen = \"0.0.0.0:8085\""), "{defaults}");
    assert!(
        defaults.contains("# udp_ports"),
        "unset keys are shown commented"
    );
    write(&again, &defaults);
    assert_eq!(print_config(&again, &[]), defaults);
}

#[test]
fn an_unknown_key_or_a_bad_value_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let f = file.to_str().unwrap();
    for (text, key, why) in [
        ("max_member = 3\n", "max_member", "unknown field"),
        ("peer_timeout = -1\n", "peer_timeout", "positive"),
        ("max_members = \"many\"\n", "max_members", "invalid type"),
        ("udp_ports = \"9-1\"\n", "udp_ports", "LOW <= HIGH"),
        ("listen = \"nowhere\"\n", "listen", "invalid"),
        ("log_format = \"xml\"\n", "log_format", "unknown variant"),
        ("[limits]\nmax_members = 3\n", "limits", "unknown field"),
    ] {
        write(&file, text);
        // Started for real (not --print-config): it must refuse to run.
        let o = run_server(&["--config", f, "--listen", "127.0.0.1:0", "--data-dir", data]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{text:?} was accepted");
        assert!(
            !stdout(&o).contains("listening on"),
            "{text:?}: it started serving"
        );
        assert!(err.contains(key), "{text:?}: {key} not named in: {err}");
        assert!(err.contains(why), "{text:?}: {why:?} not in: {err}");
        assert!(err.contains(f), "{text:?}: the file is not named in: {err}");
    }
    // A --config that does not exist is an error too (not silently the defaults).
    let missing = dir.path().join("missing.toml");
    let o = run_server(&["--config", missing.to_str().unwrap(), "--print-config"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    // The file allows one channel and one member; the flag raises channels to two.
    write(
        &file,
        "max_channels = 1\nmax_members = 1\nrequest_timeout = 3\n",
    );
    let f = file.to_str().unwrap();
    let printed = print_config(&file, &["--max-channels", "2"]);
    assert!(printed.contains("max_channels = 2\n"), "{printed}");
    assert!(printed.contains("max_members = 1\n"), "{printed}");
    assert!(printed.contains("request_timeout = 3.0\n"), "{printed}");

    let s = ServerProcess::start_with(&["--config", f, "--max-channels", "2"]);
    // The flag's limit: two channels, not the file's one.
    let a = s.ok(&Req::Create { uid: s.admin_uid });
    s.ok(&Req::Create { uid: s.admin_uid });
    assert_eq!(s.err(&Req::Create { uid: s.admin_uid }), E::Serv);
    // The file's limit where no flag says otherwise: one member per channel.
    let (u, v) = (s.signup(), s.signup());
    s.ok(&Req::Join {
        uid: u,
        juid: u,
        chid: a,
    });
    assert_eq!(
        s.err(&Req::Join {
            uid: v,
            juid: v,
            chid: a
        }),
        E::Serv
    );
}

/// The short revision of the checkout the tests run in, if they run in one.
fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[test]
fn every_binary_prints_its_version() {
    let version = env!("CARGO_PKG_VERSION");
    let rev = git_revision();
    for (bin, name) in [
        (server_bin(), "kv-server"),
        (kv_tests::bin_path("kv-e2e", "KV_BIN"), "kv"),
        (kv_tests::bin_path("kv-tui-e2e", "KV_TUI_BIN"), "kv-tui"),
    ] {
        let o = Command::new(&bin)
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(o.status.success(), "{name} --version: {}", stderr(&o));
        let line = stdout(&o);
        assert!(
            line.starts_with(&format!("{name} {version}")),
            "{name}: {line:?}"
        );
        // Built from this checkout: the revision is in it. (HEAD may have moved since
        // the build only if someone committed while the tests ran.)
        if let Some(rev) = &rev {
            assert!(
                line.contains(&format!("({rev})")),
                "{name}: {line:?} lacks {rev}"
            );
        }
    }
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let mut s = ServerProcess::start_with(&["--log-format", "json"]);
    s.signup();
    assert!(s.terminate().success());
    let log = s.stderr_log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {log}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"listening\"")),
        "the start is logged: {log}"
    );
}
