//! What `make install` installs besides the binaries: the systemd unit
//! (`dist/kv-server.service`, checked by `systemd-analyze verify` where it exists) and the
//! example configuration (`dist/config.toml`), both against the real server binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use kv_tests::server::server_bin;

fn dist(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's `ExecStart=` command line, split on spaces (it has no quoting).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
#[cfg_attr(
    kv_no_systemd_analyze,
    ignore = "systemd-analyze was not found when the tests were built (Debian package \
              `systemd`; `make test` installs it)"
)]
fn systemd_analyze_verifies_the_unit() {
    let unit = read(&dist("kv-server.service"));
    let installed = exec_start(&unit)[0].clone();
    // As `make install` does: ExecStart points at the installed binary (here, the one
    // under test, which verify requires to exist).
    let unit = unit.replace(&installed, server_bin().to_str().expect("utf-8 path"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv-server.service");
    std::fs::write(&path, unit).unwrap();
    // --man=no: the man page is installed by `make install`, not present in a checkout.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "verify failed: {stdout}{stderr}");
    // verify exits 0 over unknown keys and bad values, only warning: none may be printed.
    let warnings: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("kv-server.service"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze warns: {warnings:#?}");
}

#[test]
fn the_unit_is_hardened_and_its_command_line_runs() {
    let unit = read(&dist("kv-server.service"));
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=kv-server",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=65536",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == directive),
            "the unit lacks {directive}"
        );
    }
    // The unit's flags are the binary's: with the example config and a scratch data
    // directory in place of /etc and /var/lib, the command line loads.
    let args = exec_start(&unit);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(server_bin());
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                it.next();
                cmd.arg("--config").arg(dist("config.toml"));
            }
            "--data-dir" => {
                it.next();
                cmd.arg("--data-dir").arg(dir.path());
            }
            other => {
                cmd.arg(other);
            }
        }
    }
    let out = cmd.arg("--print-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_config_loads_and_documents_every_key() {
    let example = read(&dist("config.toml"));
    let data = tempfile::tempdir().unwrap();
    let print = |config: &Path| {
        let out = Command::new(server_bin())
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data.path())
            .arg("--print-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let empty = data.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let defaults = print(&empty);
    // Everything in it is commented out: installing it changes nothing.
    assert_eq!(print(&dist("config.toml")), defaults);
    // Every key the server knows is shown in it, commented, with its default.
    for line in defaults.lines() {
        let line = line.trim_start_matches("# ");
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        let value = value.split_whitespace().next().unwrap_or_default();
        let documented = example.lines().any(|l| {
            l.strip_prefix('#')
                .and_then(|l| l.strip_prefix(key))
                .is_some_and(|rest| rest.starts_with(" = "))
        });
        assert!(documented, "the example lacks {key}");
        if key != "data_dir" && key != "udp_ports" && key != "metrics" {
            // Defaults as printed (60.0) or as written (60) are the same number.
            let shown = example
                .lines()
                .find_map(|l| l.strip_prefix(&format!("#{key} = ")))
                .unwrap_or_default();
            let same = shown == value
                || shown.parse::<f64>().ok() == value.parse::<f64>().ok()
                    && shown.parse::<f64>().is_ok();
            assert!(
                same,
                "{key}: the example says {shown}, the default is {value}"
            );
        }
    }
}
