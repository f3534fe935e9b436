//! Atomic file replacement: a reader (or a crash) sees the old file or the new one, never a
//! mixture.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::RunError;

/// Writes `bytes` to `path` atomically: into a new temporary file in the same directory
/// (`.<name>.tmp-<pid>`), flushed to disk, then renamed over `path`, and the directory entry
/// flushed too. On failure the temporary file is removed and `path` is untouched.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("config.toml");
/// fedotp_host::run::write_atomic(&path, b"name = \"a\"\n").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"name = \"a\"\n");
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let temporary = temporary_path(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(RunError::io(&temporary, error));
    }
    if let Err(error) = fs::rename(&temporary, path) {
        let _ = fs::remove_file(&temporary);
        return Err(RunError::io(path, error));
    }
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// The temporary sibling of `path` that [`write_atomic`] writes first.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Flushes a directory's entries (the rename) to disk. Windows has no directory handles to
/// flush; its rename is already durable once it returns.
pub(crate) fn sync_directory(dir: &Path) -> Result<(), RunError> {
    if cfg!(unix) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RunError::io(dir, e))?;
    }
    Ok(())
}
