//! The `Disk` seam: every file operation of a node goes through this trait.
//!
//! Production uses [`OsDisk`] (std::fs, blocking calls run off the async workers through
//! `rt::task::spawn_blocking`). The simulator supplies `SimDisk`, which tracks synced and
//! unsynced bytes per file, loses unsynced data on a crash, tears writes, fills up and adds
//! latency. The trait is async so the simulator can suspend a node at every file operation.
//!
//! Semantics every implementation must keep (the segment log's crash safety depends on them):
//! * `write_at` either writes all bytes or returns an error; after an error the file may hold a
//!   prefix of the data (a torn write), never bytes that were not written.
//! * Data written is readable at once, but survives a crash only after `sync_data` returns `Ok`.
//! * A created, removed or renamed directory entry survives a crash only after `sync_dir` on
//!   the parent returns `Ok`.
//! * A full disk is `ErrorKind::StorageFull` (ENOSPC), not a panic.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing; `NotFound` if missing.
    Existing,
    /// Open for reading and writing, creating it empty if missing.
    CreateOrOpen,
    /// Create a new empty file; `AlreadyExists` if present.
    CreateNew,
}

/// A directory tree of files. See the module docs for the required semantics.
#[async_trait]
pub trait Disk: Send + Sync + Debug + 'static {
    /// Creates a directory and its missing parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries in a directory, sorted.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens or creates a file.
    async fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file or directory, replacing the target.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames in a directory durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// True if the path exists.
    async fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Bytes still available to this process on the filesystem holding `path`.
    async fn available_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// An open file.
#[async_trait]
pub trait DiskFile: Send + Sync + Debug {
    /// Reads up to `length` bytes at `offset`; shorter only at the end of the file.
    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Bytes>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    async fn write_at(&self, offset: u64, data: Bytes) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    async fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file to `length` bytes.
    async fn set_len(&self, length: u64) -> io::Result<()>;
    /// The file's current length.
    async fn len(&self) -> io::Result<u64>;
}

/// A shared disk handle.
pub type SharedDisk = Arc<dyn Disk>;

/// The operating system's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

impl OsDisk {
    /// A shared handle to the OS disk.
    pub fn shared() -> SharedDisk {
        Arc::new(OsDisk)
    }
}

async fn blocking<R: Send + 'static>(work: impl FnOnce() -> io::Result<R> + Send + 'static) -> io::Result<R> {
    rt::task::spawn_blocking(work).await
}

#[async_trait]
impl Disk for OsDisk {
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::create_dir_all(path)).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_owned();
        blocking(move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let path = path.to_owned();
        blocking(move || {
            let mut options = std::fs::OpenOptions::new();
            let _ = options.read(true).write(true);
            match mode {
                OpenMode::Existing => {}
                OpenMode::CreateOrOpen => {
                    let _ = options.create(true);
                }
                OpenMode::CreateNew => {
                    let _ = options.create_new(true);
                }
            }
            let file = options.open(&path)?;
            Ok(Arc::new(OsFile { file: Arc::new(file) }) as Arc<dyn DiskFile>)
        })
        .await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::remove_file(path)).await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::remove_dir_all(path)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_owned(), to.to_owned());
        blocking(move || std::fs::rename(from, to)).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::File::open(path)?.sync_all()).await
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = path.to_owned();
        blocking(move || path.try_exists()).await
    }

    async fn available_bytes(&self, path: &Path) -> io::Result<u64> {
        let path = path.to_owned();
        blocking(move || {
            let stat = rustix::fs::statvfs(&path).map_err(io::Error::from)?;
            Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
        })
        .await
    }
}

/// A file on the OS disk.
#[derive(Debug)]
struct OsFile {
    file: Arc<std::fs::File>,
}

#[async_trait]
impl DiskFile for OsFile {
    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let file = Arc::clone(&self.file);
        blocking(move || {
            let mut buffer = vec![0u8; length];
            let mut filled = 0;
            while filled < length {
                match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            buffer.truncate(filled);
            Ok(Bytes::from(buffer))
        })
        .await
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = Arc::clone(&self.file);
        blocking(move || file.write_all_at(&data, offset)).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        blocking(move || file.sync_data()).await
    }

    async fn set_len(&self, length: u64) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        blocking(move || file.set_len(length)).await
    }

    async fn len(&self) -> io::Result<u64> {
        let file = Arc::clone(&self.file);
        blocking(move || Ok(file.metadata()?.len())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn os_disk_writes_reads_and_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = OsDisk;
        let sub = dir.path().join("a/b");
        disk.create_dir_all(&sub).await.expect("mkdir");
        let file = disk.open_file(&sub.join("f"), OpenMode::CreateNew).await.expect("create");
        file.write_at(0, Bytes::from_static(b"hello")).await.expect("write");
        file.write_at(5, Bytes::from_static(b" world")).await.expect("append");
        file.sync_data().await.expect("sync");
        assert_eq!(&file.read_at(0, 100).await.expect("read")[..], b"hello world");
        assert_eq!(file.len().await.expect("len"), 11);
        file.set_len(5).await.expect("truncate");
        assert_eq!(&file.read_at(0, 100).await.expect("read")[..], b"hello");
        assert_eq!(disk.list_dir(&sub).await.expect("list"), vec!["f".to_owned()]);
        assert!(disk.open_file(&sub.join("f"), OpenMode::CreateNew).await.is_err());
        assert!(disk.available_bytes(dir.path()).await.expect("statvfs") > 0);
        disk.rename(&sub.join("f"), &sub.join("g")).await.expect("rename");
        assert!(disk.exists(&sub.join("g")).await.expect("exists"));
        disk.remove_dir_all(&dir.path().join("a")).await.expect("rm");
        assert!(!disk.exists(&sub).await.expect("exists"));
    }
}
