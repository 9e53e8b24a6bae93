//! `kv-dist OUT_DIR`: writes the shell completions (bash, zsh, fish) and man pages of
//! `kv-server`, `kv` and `kv-tui`, generated from their clap definitions so they never
//! drift from the real flags. `make install` runs it and installs the result:
//!
//! ```text
//! OUT_DIR/completions/bash/{kv-server,kv,kv-tui}.bash
//! OUT_DIR/completions/zsh/_{kv-server,kv,kv-tui}
//! OUT_DIR/completions/fish/{kv-server,kv,kv-tui}.fish
//! OUT_DIR/man/man1/{kv-server,kv,kv-tui}.1 (plus one page per subcommand, e.g. kv-server-backup.1)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// The three programs' command lines.
fn commands() -> Vec<clap::Command> {
    vec![
        kv_server::cli::command(),
        kv_client::cli::command(),
        kv_client::tui::cli::command(),
    ]
}

/// Writes every completion and man page under `out`; returns the files written.
fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_owned();
        for (shell, dir) in [
            (Shell::Bash, "bash"),
            (Shell::Zsh, "zsh"),
            (Shell::Fish, "fish"),
        ] {
            let dir = out.join("completions").join(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &dir)
                .with_context(|| format!("{name} completions for {shell}"))?;
            written.push(path);
        }
        let man = out.join("man").join("man1");
        std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
        clap_mangen::generate_to(cmd.clone(), &man).with_context(|| format!("{name} man pages"))?;
        for entry in std::fs::read_dir(&man)? {
            written.push(entry?.path());
        }
    }
    written.sort();
    written.dedup();
    Ok(written)
}

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: kv-dist OUT_DIR")?;
    for path in generate(&out)? {
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_follow_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let read = |p: &str| {
            std::fs::read_to_string(dir.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
        };
        let bash = read("completions/bash/kv-server.bash");
        for flag in [
            "--config",
            "--print-config",
            "--metrics",
            "--log-format",
            "backup",
        ] {
            assert!(bash.contains(flag), "bash completion lacks {flag}");
        }
        assert!(read("completions/zsh/_kv").contains("join"));
        assert!(read("completions/fish/kv-tui.fish").contains("identity"));
        let man = read("man/man1/kv-server.1");
        assert!(
            man.starts_with(".ie") || man.contains(".TH kv-server 1"),
            "{man}"
        );
        assert!(man.contains("config"));
        assert!(read("man/man1/kv-server-backup.1").contains("backup"));
        assert!(read("man/man1/kv.1").contains(".TH kv 1"));
        assert!(read("man/man1/kv-tui.1").contains(".TH kv-tui 1"));
    }
}
