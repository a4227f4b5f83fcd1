//! The data directory of the SQLite store (§12.8): one process at a time holds it, and its
//! writability is probed apart from the log.
//!
//! The lock is an exclusive `flock` on `crier.lock`, held from start until the log is closed;
//! the kernel drops it when the process dies, however it dies, so a crash never leaves a
//! stale lock behind. The holder writes its process id into the file, so a second hub can
//! name the process it collided with. `crier keys` opens the database without the lock and
//! keeps working beside a running hub.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "crier.lock";
/// The file the writability probe creates, syncs and removes in the data directory.
pub const PROBE_FILE: &str = ".crier-probe";

/// Why the data directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the data directory {dir} is in use by another crier{holder}; one process serves a data \
         directory at a time (stop the other one, or give this one its own --data-dir)"
    )]
    Held {
        /// The directory.
        dir: String,
        /// ` (pid N)` when the holder wrote its process id, else empty.
        holder: String,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock the data directory {dir} ({file}): {source}")]
    Io {
        /// The directory.
        dir: String,
        /// The lock file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock on a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the data directory `dir` (which exists) for this process, or says who holds it.
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source: std::io::Error| LockError::Io {
        dir: dir.display().to_string(),
        file: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // The holder's pid is a courtesy: a file that cannot be read names nobody.
            let _ = (&mut file).take(64).read_to_string(&mut text);
            let holder = text
                .trim()
                .strip_prefix("pid ")
                .and_then(|p| p.parse::<u32>().ok())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(LockError::Held {
                dir: dir.display().to_string(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let write_pid = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        writeln!(f, "pid {}", std::process::id())?;
        f.sync_all()
    };
    write_pid(&mut file).map_err(io)?;
    Ok(DirLock { _file: file, path })
}

/// Whether a new file can be written and made durable in `dir`: creates [`PROBE_FILE`],
/// writes a few bytes, fsyncs and removes it. Never touches the log's own files, so it
/// fails where the log would (a read-only or full file system, a directory that turned
/// unwritable) without risking them.
pub fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    f.write_all(b"crier writability probe\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&path)
}
