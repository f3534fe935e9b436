//! One process at a time per run directory: an advisory lock on `run.lock`.
//!
//! A process that trains a run (a new one, or `--resume`) holds an exclusive lock on the run
//! directory's `run.lock` (`flock` on Unix, `LockFileEx` on Windows) until it ends — or dies:
//! the operating system drops the lock with the process, so a killed run never leaves its
//! directory locked. The file says who holds it, for the refusal a second process gets. While
//! the lock is held, any temporary file of an atomic write (`.<name>.tmp-<pid>`) in the run
//! directory is a leftover of a process that was killed mid-write, and is removed.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::RunError;

/// The lock file's name inside a run directory.
pub(crate) const LOCK_FILE: &str = "run.lock";

/// The lock on a run directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    /// Held open: closing it releases the lock.
    _file: File,
}

impl RunLock {
    /// Takes the lock of the run directory `dir`, or says which process holds it.
    pub(crate) fn take(dir: &Path) -> Result<RunLock, RunError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RunError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(RunError::Busy {
                    path: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(RunError::io(&path, e)),
        }
        let holder = format!("process {}", std::process::id());
        let written = (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(holder.as_bytes())?;
            file.sync_all()
        })();
        written.map_err(|e| RunError::io(&path, e))?;
        remove_stale_temporaries(dir)?;
        Ok(RunLock { _file: file })
    }
}

/// Removes the temporary files of atomic writes in `dir` and its `checkpoints/`: with the lock
/// held, no other process is writing them.
fn remove_stale_temporaries(dir: &Path) -> Result<(), RunError> {
    for dir in [dir.to_path_buf(), dir.join(super::CHECKPOINT_DIR)] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RunError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| RunError::io(&dir, e))?;
            let name = entry.file_name();
            let stale = name
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"));
            if stale {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| RunError::io(&path, e))?;
            }
        }
    }
    Ok(())
}
