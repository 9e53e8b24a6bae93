// Sets `KV_VERSION` for `--version`: the package version, plus the git revision when built
// from a checkout (`0.1.0 (1a2b3c4d5e6f)`). Without git or a `.git` (a source tarball, a
// vendored copy) it is the package version alone; the build never fails over it.
// `client/build.rs` includes this file, so all three binaries say the same.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git -C DIR args…`'s trimmed stdout, if git ran and succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    match git(&dir, &["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            println!("cargo::rustc-env=KV_VERSION={version} ({rev})");
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
            let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                watched.push(branch);
            }
            for name in watched {
                if let Some(p) = git(&dir, &["rev-parse", "--git-path", &name]) {
                    let p = dir.join(p);
                    // A path that does not exist would make cargo rerun this every build.
                    // A branch that is only in packed-refs gets a loose file at its next
                    // commit: watch the directory it will appear in.
                    let watch = if p.exists() {
                        Some(p.as_path())
                    } else {
                        p.parent().filter(|d| d.exists())
                    };
                    if let Some(w) = watch {
                        println!("cargo::rerun-if-changed={}", w.display());
                    }
                }
            }
        }
        None => println!("cargo::rustc-env=KV_VERSION={version}"),
    }
}
