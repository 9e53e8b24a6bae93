//! `kv-server backup FILE`: a consistent copy of the database while the server runs.
//!
//! SQLite's online backup API copies the live database page by page. All pages are copied
//! in one step, inside one read transaction, so the copy is the database as of one commit:
//! every change the server acknowledged before the backup began is in it (the server
//! commits before it replies), and no half-applied request is. In WAL mode the server's
//! writes go on meanwhile (a reader never blocks the writer). The copy goes to a temporary
//! file next to FILE, is checked (`PRAGMA integrity_check`) and only then renamed to FILE,
//! so a failed backup never leaves a partial file under the name asked for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::store::DB_FILE;

/// Longest a backup retries while the database is locked (a checkpoint, a schema change).
const BUSY_FOR: Duration = Duration::from_secs(30);

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// FILE exists already; a backup never overwrites.
    #[error("{0} exists; not overwriting it")]
    Exists(PathBuf),
    /// SQLite failed (no database in the data directory, locked for too long, I/O).
    #[error("backup of {from} to {to}: {source}")]
    Sqlite {
        /// The database.
        from: PathBuf,
        /// The copy.
        to: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The copy did not pass SQLite's integrity check.
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    /// The finished copy could not be moved into place.
    #[error("moving the copy to {path}: {source}")]
    Io {
        /// Where it should have gone.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Copies `data_dir`'s database to `to` (which must not exist); returns the pages copied.
pub fn backup(data_dir: &Path, to: &Path) -> Result<u64, BackupError> {
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let from = data_dir.join(DB_FILE);
    let partial = partial_path(to);
    let _ = std::fs::remove_file(&partial);
    let sqlite = |source| BackupError::Sqlite {
        from: from.clone(),
        to: to.to_path_buf(),
        source,
    };
    let result = (|| {
        // Read-write without create: a missing database is an error, not a new empty one
        // (read-only connections cannot open a WAL database whose -shm they cannot write).
        let src = Connection::open_with_flags(
            &from,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        src.busy_timeout(BUSY_FOR).map_err(sqlite)?;
        let mut dst = Connection::open(&partial).map_err(sqlite)?;
        let pages = {
            let b = Backup::new(&src, &mut dst).map_err(sqlite)?;
            let deadline = Instant::now() + BUSY_FOR;
            loop {
                // -1: every page in one step, one read transaction, one snapshot.
                match b.step(-1).map_err(sqlite)? {
                    StepResult::Done => break,
                    StepResult::More | StepResult::Busy | StepResult::Locked
                        if Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        return Err(sqlite(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some("database stayed locked".into()),
                        )))
                    }
                }
            }
            b.progress().pagecount as u64
        };
        let check: String = dst
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(sqlite)?;
        if check != "ok" {
            return Err(BackupError::Corrupt(check));
        }
        // A one-file copy: no -wal beside it to forget when it is moved around.
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sqlite)?;
        dst.close().map_err(|(_, e)| sqlite(e))?;
        Ok(pages)
    })();
    match result {
        Ok(pages) => {
            std::fs::rename(&partial, to).map_err(|source| BackupError::Io {
                path: to.to_path_buf(),
                source,
            })?;
            Ok(pages)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// `FILE.partial`, beside FILE (same file system, so the rename is atomic).
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Store};

    #[test]
    fn copies_a_database_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open_in(dir.path()).unwrap();
        let uid = crate::ids::random_id();
        let user = crate::store::UserRecord {
            id: uid,
            perms: 8,
            name: String::new(),
            key: None,
        };
        assert!(store.insert_user(&user).unwrap());
        let to = dir.path().join("copy.sqlite3");
        assert!(backup(dir.path(), &to).unwrap() > 0);
        let copy = Connection::open(&to).unwrap();
        let n: i64 = copy
            .query_row(
                "SELECT count(*) FROM users WHERE id = ?1",
                [uid as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        assert!(matches!(
            backup(dir.path(), &to),
            Err(BackupError::Exists(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        let to2 = empty.path().join("x");
        assert!(
            backup(empty.path(), &to2).is_err(),
            "no database, no backup"
        );
        assert!(!to2.exists() && !partial_path(&to2).exists());
    }
}
