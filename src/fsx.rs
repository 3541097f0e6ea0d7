//! Files that are whole or absent: every file chartrl writes (data, models, reports, exports)
//! goes to a temporary file beside its target, is flushed to disk and renamed over the target,
//! so a command interrupted at any point (Ctrl-C, a kill, a full disk) leaves the old file or
//! none, never a truncated one that loads as valid. Directories (models) are built the same
//! way: in a temporary directory renamed into place.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// An error writing `path`, with the path in its message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    pub fn new(path: &Path, source: io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether an error (or any of its causes) says the disk is full: ENOSPC or EDQUOT from the
/// file system, SQLITE_FULL from the store, or a library's message quoting either.
pub fn is_out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    const FULL: [i32; 2] = [28, 122]; // ENOSPC, EDQUOT
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some_and(|n| FULL.contains(&n)) {
                return true;
            }
        }
        if let Some(sql) = c.downcast_ref::<rusqlite::Error>() {
            if sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                return true;
            }
        }
        let text = c.to_string();
        if text.contains("(os error 28)") || text.contains("(os error 122)") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The temporary name of `path` while it is written: `.STEM.tmp-PID.EXT` beside it, hidden,
/// never the name of a real output, and with the extension writers choose a format by.
pub fn temp_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}{ext}", std::process::id()))
}

/// Creates `dir` and its parents; a file in the way is named ("x is a file, not a
/// directory") instead of the bare "File exists".
pub fn create_dir_all(dir: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        let blocker = dir
            .ancestors()
            .find(|a| !a.as_os_str().is_empty() && a.is_file());
        match blocker {
            Some(f) => FileError::new(
                f,
                io::Error::new(io::ErrorKind::NotADirectory, "a file, not a directory"),
            ),
            None => FileError::new(dir, e),
        }
    })
}

/// Creates the parent directory of `path` if it has one.
fn ensure_parent(path: &Path) -> Result<(), FileError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => create_dir_all(dir),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| FileError::new(path, e))?;
    f.commit()
}

/// A file being written: [`AtomicFile::commit`] renames it into place; dropped uncommitted
/// (an error, a panic), it is removed and the target is untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self, FileError> {
        ensure_parent(path)?;
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(|e| FileError::new(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Flushes, syncs and renames the file over its target.
    pub fn commit(mut self) -> Result<(), FileError> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out
            .into_inner()
            .map_err(|e| FileError::new(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| FileError::new(&self.path, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| FileError::new(&self.path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a file through `write_to` (which writes the path it is given) atomically: for
/// writers that take a path, like a PNG encoder.
pub fn write_with<E>(
    path: &Path,
    write_to: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), WriteWithError<E>> {
    ensure_parent(path).map_err(WriteWithError::File)?;
    let tmp = temp_path(path);
    if let Err(e) = write_to(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteWithError::Writer(e));
    }
    let synced = File::open(&tmp).and_then(|f| f.sync_all());
    let renamed = synced.and_then(|()| std::fs::rename(&tmp, path));
    renamed.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WriteWithError::File(FileError::new(path, e))
    })
}

/// Why [`write_with`] failed: the writer, or the file system.
#[derive(Debug)]
pub enum WriteWithError<E> {
    Writer(E),
    File(FileError),
}

/// Puts the directory `tmp` in the place of `dir`: the old `dir`, if any, is moved aside
/// first and removed once the new one is in place.
pub fn replace_dir(tmp: &Path, dir: &Path) -> Result<(), FileError> {
    let old = temp_path(&dir.with_file_name(format!(
        "{}-old",
        dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )));
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(|e| FileError::new(dir, e))?;
    }
    if let Err(e) = std::fs::rename(tmp, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        return Err(FileError::new(dir, e));
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| FileError::new(&old, e))?;
    }
    Ok(())
}

/// Gives `path` the mode a newly created file gets (0666 less the umask): for files written
/// by libraries that create private (0600) temporaries, like safetensors.
pub fn default_mode(path: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o666 & !umask();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| FileError::new(path, e))?;
    }
    Ok(())
}

/// The process's umask, read from `/proc/self/status` (022 where it cannot be read).
#[cfg(unix)]
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncommitted_file_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.jsonl");
        write(&p, b"old\n").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"new but unfinished").unwrap();
            // dropped without commit: an interruption
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temporary file is removed");
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"new\n").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
    }

    #[test]
    fn a_directory_is_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let (dir, tmp) = (root.path().join("model"), root.path().join(".model.tmp"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("old.txt"), "old").unwrap();
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("new.txt"), "new").unwrap();
        replace_dir(&tmp, &dir).unwrap();
        assert!(dir.join("new.txt").is_file() && !dir.join("old.txt").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn default_mode_undoes_a_private_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        default_mode(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask());
    }
}
