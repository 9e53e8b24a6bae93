//! Private files: the data directory is 0700 and everything in it 0600, so no other local
//! user can read the users, their keys or the admin's key (issue 9 §5).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) if missing and makes it 0700. A shared directory (sticky
/// bit, like `/tmp`) is refused rather than closed to everyone else.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if let Ok(meta) = fs::metadata(dir) {
        if meta.permissions().mode() & 0o1000 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "is a shared directory (sticky bit); use a directory of its own",
            ));
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing file is kept and
/// made 0600).
pub fn create_private(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        }
        Err(e) => Err(e),
    }
}

/// Makes `path` 0600 if it exists; failures are logged (the file may not exist yet).
pub fn make_private(path: &Path) {
    match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot make file private"),
    }
}

/// Writes `bytes` to a new file `path` with mode 0600, through a temporary file and a
/// rename, so a crash never leaves a partial file.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use io::Write;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!("{}.tmp", name.unwrap_or_default()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dirs_and_files_are_owner_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700, "an existing open dir is closed");
        let f = d.join("x");
        fs::write(&f, b"1").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        write_private(&d.join("k"), b"secret").unwrap();
        let shared = t.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            private_dir(&shared).is_err(),
            "a sticky directory is not taken over"
        );
        assert_eq!(mode(&shared), 0o777);
        assert_eq!(mode(&d.join("k")), 0o600);
        assert_eq!(fs::read(d.join("k")).unwrap(), b"secret");
    }
}
