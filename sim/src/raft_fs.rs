//! `CrashFs`: raft-engine's `FileSystem` over real files, losing what a power cut would lose.
//!
//! Each simulated controller node keeps its Raft log in a [`raft_engine::Engine`] opened with
//! a `CrashFs` (`Engine::open_with_file_system`). raft-engine scans, creates and locks its
//! directory with `std::fs` directly, bypassing the trait, so the log files are real files (one
//! directory per node and seed): `CrashFs` wraps raft-engine's own `DefaultFileSystem` and
//! tracks, per file, what survives a power cut. It is the counterpart, for the controller's
//! Raft log, of [`crate::disk::SimDisk`] for partition data.
//!
//! # Fault model
//!
//! * **Durability.** Each file (inode) keeps its logical written end (where its data ends; not
//!   `file_size()`, which includes the space raft-engine `fallocate`s ahead) and its durable
//!   length, set to the written end at each `Handle::sync`. A write below the durable length
//!   (raft-engine rewrites the header of a recycled file in place) saves the bytes it replaces,
//!   and a crash puts them back. A truncation is durable at once: raft-engine truncates only
//!   `fallocate`d zeros, the remains of a failed append and a torn tail at recovery, and syncs
//!   right after the last.
//! * **Names.** raft-engine syncs directories through `std` (`File::open(dir).sync_all()`),
//!   out of `CrashFs`'s sight, so a created or renamed file's name counts as durable once the
//!   file itself has been synced since the create or rename: a simplification, since
//!   raft-engine syncs the directory right after a new file's header. A delete is durable at
//!   once, and so is the loss of a file a rename replaced. Files found on disk when first
//!   opened (not created through this `CrashFs`) are durable.
//! * **Crash** ([`CrashFs::crash`]): files never synced are removed; a file renamed since its
//!   last sync goes back to its durable name; every file gets its overwritten bytes back and is
//!   truncated to its durable length plus a torn tail, a prefix of its unsynced bytes (as a
//!   page cache that wrote back part of the data would leave), optionally with the last kept
//!   byte garbled (a sector written half-way). The caller chooses each torn tail
//!   ([`TornTail`]): `CrashFs`'s methods also run on raft-engine's rayon recovery threads,
//!   outside the madsim context, so `CrashFs` never calls `madsim::rand` or buggify itself.
//!   At the power-cut instant, before the engine is dropped, the scenario calls
//!   [`CrashFs::freeze`]: from then on every write, truncation, create, delete and rename
//!   fails with "power lost", and syncs succeed but make nothing durable (raft-engine panics on
//!   a failed fsync, and its active writer truncates and fsyncs when the engine is dropped).
//! * **Full disk.** With a capacity set, a write that would exceed it writes the prefix that
//!   fits and the next write fails with `StorageFull` (ENOSPC), worded "nospace" because that
//!   is how raft-engine recognises a full disk (it then rotates to a new file, or fails the
//!   write). Used bytes are the written ends of the named files; `fallocate` is not charged.
//! * **Not modelled.** Latency (raft-engine's calls are synchronous and may run outside madsim,
//!   where no virtual sleep exists), read faults, corruption of synced bytes and misdirected
//!   writes. The real fsync is skipped: the host never loses power in a simulation, and it
//!   would cost milliseconds per sync.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission, WriteExt};

use crate::disk::CrashReport;

/// raft-engine's real file handle (`LogFd`, which it does not export by name).
type RealHandle = <DefaultFileSystem as FileSystem>::Handle;
/// raft-engine's real reader and writer (`LogFile`).
type RealFile = <DefaultFileSystem as FileSystem>::Writer;

/// What survives of one file's unsynced bytes at a crash; chosen by the caller of
/// [`CrashFs::crash`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TornTail {
    /// Unsynced bytes kept past the durable length (at most the unsynced bytes there are).
    pub kept_bytes: u64,
    /// Whether the last kept byte is flipped, as a sector written half-way leaves it.
    pub garbled: bool,
}

/// What `CrashFs` knows of one file.
#[derive(Debug, Default)]
struct Inode {
    /// End of the data written (not of the space allocated).
    written_end_bytes: u64,
    /// Length that survives a crash.
    durable_bytes: u64,
    /// The name the file has after a crash; `None` until its first sync.
    durable_path: Option<PathBuf>,
    /// (offset, bytes) that unsynced writes replaced below `durable_bytes`, oldest first.
    before_images: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Path -> inode, as the running node sees it.
    names: BTreeMap<PathBuf, u64>,
    frozen: bool,
    capacity_bytes: Option<u64>,
    /// Statistics for traces.
    syncs: u64,
}

impl State {
    fn check_alive(&self) -> io::Result<()> {
        if self.frozen {
            return Err(io::Error::other("power lost"));
        }
        Ok(())
    }

    /// Bytes of the files that have a name.
    fn used_bytes(&self) -> u64 {
        self.names.values().filter_map(|id| self.inodes.get(id)).map(|inode| inode.written_end_bytes).sum()
    }

    /// The inode of `path`, tracking it first (as durable, at `real_size_bytes`) if it is new.
    fn track(&mut self, path: &Path, real_size_bytes: u64) -> u64 {
        if let Some(id) = self.names.get(path) {
            return *id;
        }
        self.next_inode += 1;
        let id = self.next_inode;
        let inode = Inode {
            written_end_bytes: real_size_bytes,
            durable_bytes: real_size_bytes,
            durable_path: Some(path.to_owned()),
            before_images: Vec::new(),
        };
        let _ = self.inodes.insert(id, inode);
        let _ = self.names.insert(path.to_owned(), id);
        id
    }

    /// Forgets the file named `path`, if any.
    fn unlink(&mut self, path: &Path) {
        if let Some(id) = self.names.remove(path) {
            let _ = self.inodes.remove(&id);
        }
    }

    /// How many of `length_bytes` at `offset` fit on the disk.
    fn fitting_bytes(&self, id: u64, offset: u64, length_bytes: u64) -> u64 {
        let Some(capacity_bytes) = self.capacity_bytes else { return length_bytes };
        let Some(inode) = self.inodes.get(&id) else { return length_bytes };
        let room_bytes = capacity_bytes.saturating_sub(self.used_bytes());
        let growth_bytes = (offset + length_bytes).saturating_sub(inode.written_end_bytes);
        if growth_bytes <= room_bytes {
            length_bytes
        } else {
            (inode.written_end_bytes + room_bytes).saturating_sub(offset).min(length_bytes)
        }
    }

    /// Truncation is durable at once (see the fault model).
    fn note_truncate(&mut self, id: u64, length_bytes: u64) {
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.written_end_bytes = length_bytes;
            inode.durable_bytes = inode.durable_bytes.min(length_bytes);
            let durable_bytes = inode.durable_bytes;
            inode.before_images.retain_mut(|(at, bytes)| {
                bytes.truncate(durable_bytes.saturating_sub(*at) as usize);
                !bytes.is_empty()
            });
        }
    }
}

/// A `raft_engine::env::FileSystem` over real files that loses, at [`CrashFs::crash`], what a
/// power cut would. Clones share state: the simulator keeps one across a node's incarnations
/// while each engine owns an `Arc<CrashFs>`.
#[derive(Debug, Clone, Default)]
pub struct CrashFs {
    state: Arc<Mutex<State>>,
}

impl CrashFs {
    /// A file system with nothing tracked yet and no capacity limit.
    pub fn new() -> CrashFs {
        CrashFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("CrashFs lock is never poisoned")
    }

    /// Power cut, step one: every later write, truncation, create, delete and rename fails, and
    /// syncs make nothing durable. Call it before the engine is dropped.
    pub fn freeze(&self) {
        self.lock().frozen = true;
    }

    /// Whether [`CrashFs::freeze`] is in force.
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }

    /// Power cut, step two, once the engine is dropped: remove the files never synced, put back
    /// durable names and overwritten bytes, and cut every file to its durable length plus the
    /// torn tail `torn_tail(path, unsynced_bytes)` returns (called, in path order, only for
    /// files with unsynced bytes); then power back on. Returns what was lost, for the trace.
    pub fn crash(&self, mut torn_tail: impl FnMut(&Path, u64) -> TornTail) -> io::Result<CrashReport> {
        let mut state = self.lock();
        let mut report = CrashReport::default();
        let names = std::mem::take(&mut state.names);
        let mut survivors: BTreeMap<PathBuf, u64> = BTreeMap::new();
        // Files never synced first, so that their names are free for files renamed back.
        for (path, id) in &names {
            let Some(inode) = state.inodes.get(id) else { continue };
            if inode.durable_path.is_none() {
                remove_if_present(path)?;
                report.lost_bytes += inode.written_end_bytes;
                report.changes.push(format!(
                    "{}: vanished ({} bytes, never synced)",
                    path.display(),
                    inode.written_end_bytes
                ));
                let _ = state.inodes.remove(id);
            }
        }
        for (path, id) in &names {
            let Some(inode) = state.inodes.get_mut(id) else { continue };
            let Some(durable_path) = inode.durable_path.clone() else { continue };
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let mut notes = Vec::new();
            // Overwritten bytes, newest first, so the oldest (durable) image wins.
            let mut restored_bytes = 0u64;
            for (at, image) in inode.before_images.drain(..).rev() {
                let mut current = vec![0; image.len()];
                file.read_exact_at(&mut current, at)?;
                restored_bytes += current.iter().zip(&image).filter(|(now, then)| now != then).count() as u64;
                file.write_all_at(&image, at)?;
            }
            if restored_bytes > 0 {
                notes.push(format!("{restored_bytes} overwritten bytes restored"));
            }
            let unsynced_bytes = inode.written_end_bytes - inode.durable_bytes;
            let tear = if unsynced_bytes > 0 { torn_tail(path, unsynced_bytes) } else { TornTail::default() };
            let kept_bytes = tear.kept_bytes.min(unsynced_bytes);
            let length_bytes = inode.durable_bytes + kept_bytes;
            file.set_len(length_bytes)?;
            if kept_bytes > 0 {
                notes.push(format!("torn: {kept_bytes} unsynced bytes kept"));
            }
            let mut garbled_bytes = 0;
            if tear.garbled && kept_bytes > 0 {
                let mut last = [0u8; 1];
                file.read_exact_at(&mut last, length_bytes - 1)?;
                file.write_all_at(&[!last[0]], length_bytes - 1)?;
                garbled_bytes = 1;
                notes.push("last byte garbled".to_owned());
            }
            report.lost_bytes += restored_bytes + (unsynced_bytes - kept_bytes) + garbled_bytes;
            drop(file);
            let mut final_path = path.clone();
            if durable_path != *path {
                if durable_path.exists() {
                    remove_if_present(path)?;
                    report.lost_bytes += length_bytes;
                    report.changes.push(format!(
                        "{}: vanished (rename from {} not synced, and that name is taken)",
                        path.display(),
                        durable_path.display()
                    ));
                    let _ = state.inodes.remove(id);
                    continue;
                }
                std::fs::rename(path, &durable_path)?;
                notes.push(format!("back to {} (rename not synced)", durable_path.display()));
                final_path = durable_path;
            }
            let inode = state.inodes.get_mut(id).expect("present above");
            if inode.written_end_bytes != length_bytes || !notes.is_empty() {
                let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
                report.changes.push(format!(
                    "{}: {} -> {length_bytes} bytes{notes}",
                    path.display(),
                    inode.written_end_bytes
                ));
            }
            inode.written_end_bytes = length_bytes;
            inode.durable_bytes = length_bytes;
            inode.durable_path = Some(final_path.clone());
            let _ = survivors.insert(final_path, *id);
        }
        state.inodes.retain(|id, _| survivors.values().any(|survivor| survivor == id));
        state.names = survivors;
        state.frozen = false;
        Ok(report)
    }

    /// The kernel writes back everything the process left in the page cache, as it eventually
    /// does after a process (not power) dies. Returns the bytes that became durable.
    pub fn writeback(&self) -> u64 {
        let mut state = self.lock();
        let mut written_bytes = 0;
        let names: Vec<(PathBuf, u64)> = state.names.iter().map(|(path, id)| (path.clone(), *id)).collect();
        for (path, id) in names {
            if let Some(inode) = state.inodes.get_mut(&id) {
                written_bytes += inode.written_end_bytes - inode.durable_bytes;
                inode.durable_bytes = inode.written_end_bytes;
                inode.durable_path = Some(path);
                inode.before_images.clear();
            }
        }
        written_bytes
    }

    /// Changes the capacity (disk full / space returns); `None` for unlimited.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// The capacity in force, `None` for unlimited.
    pub fn capacity(&self) -> Option<u64> {
        self.lock().capacity_bytes
    }

    /// Bytes currently stored (written ends of the named files).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Syncs that made something durable so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    fn handle(&self, inode: u64, real: RealHandle) -> CrashHandle {
        CrashHandle { fs: self.clone(), inode, real: Arc::new(real) }
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn no_space() -> io::Error {
    // raft-engine's `is_no_space_err` looks for "nospace" in the message.
    io::Error::new(io::ErrorKind::StorageFull, "nospace: no space left on device")
}

impl FileSystem for CrashFs {
    type Handle = CrashHandle;
    type Reader = RealFile;
    type Writer = CrashWriter;

    fn create<P: AsRef<Path>>(&self, path: P) -> io::Result<CrashHandle> {
        let path = path.as_ref();
        let mut state = self.lock();
        state.check_alive()?;
        let existed = path.exists();
        let real = DefaultFileSystem.create(path)?;
        let inode = if existed {
            state.track(path, real.file_size()? as u64)
        } else {
            state.unlink(path);
            let inode = state.track(path, 0);
            state.inodes.get_mut(&inode).expect("just tracked").durable_path = None;
            inode
        };
        tracing::debug!(path = %path.display(), inode, existed, "crashfs: create");
        Ok(self.handle(inode, real))
    }

    fn open<P: AsRef<Path>>(&self, path: P, perm: Permission) -> io::Result<CrashHandle> {
        let path = path.as_ref();
        let mut state = self.lock();
        let real = DefaultFileSystem.open(path, perm)?;
        let inode = state.track(path, real.file_size()? as u64);
        Ok(self.handle(inode, real))
    }

    fn delete<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.lock();
        state.check_alive()?;
        DefaultFileSystem.delete(path)?;
        tracing::debug!(path = %path.display(), "crashfs: delete");
        state.unlink(path);
        Ok(())
    }

    fn rename<P: AsRef<Path>>(&self, src_path: P, dst_path: P) -> io::Result<()> {
        let (from, to) = (src_path.as_ref(), dst_path.as_ref());
        let mut state = self.lock();
        state.check_alive()?;
        DefaultFileSystem.rename(from, to)?;
        tracing::debug!(from = %from.display(), to = %to.display(), "crashfs: rename");
        state.unlink(to);
        if let Some(id) = state.names.remove(from) {
            let _ = state.names.insert(to.to_owned(), id);
        }
        Ok(())
    }

    fn new_reader(&self, handle: Arc<CrashHandle>) -> io::Result<RealFile> {
        DefaultFileSystem.new_reader(handle.real.clone())
    }

    fn new_writer(&self, handle: Arc<CrashHandle>) -> io::Result<CrashWriter> {
        let real = DefaultFileSystem.new_writer(handle.real.clone())?;
        Ok(CrashWriter { handle, real, offset: 0 })
    }
}

/// An open file of a [`CrashFs`].
pub struct CrashHandle {
    fs: CrashFs,
    inode: u64,
    real: Arc<RealHandle>,
}

impl fmt::Debug for CrashHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashHandle").field("inode", &self.inode).finish_non_exhaustive()
    }
}

impl Handle for CrashHandle {
    fn truncate(&self, offset: usize) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_alive()?;
        self.real.truncate(offset)?;
        state.note_truncate(self.inode, offset as u64);
        Ok(())
    }

    fn file_size(&self) -> io::Result<usize> {
        self.real.file_size()
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.fs.lock();
        if state.frozen {
            // Succeeds (raft-engine panics on a failed fsync) but makes nothing durable.
            return Ok(());
        }
        let path = state.names.iter().find(|(_, id)| **id == self.inode).map(|(path, _)| path.clone());
        if let Some(inode) = state.inodes.get_mut(&self.inode) {
            inode.durable_bytes = inode.written_end_bytes;
            inode.before_images.clear();
            if path.is_some() {
                inode.durable_path = path;
            }
        }
        state.syncs += 1;
        Ok(())
    }
}

/// The writer of a [`CrashHandle`]: raft-engine's own, with the writes tracked.
pub struct CrashWriter {
    handle: Arc<CrashHandle>,
    real: RealFile,
    /// Mirror of `real`'s position.
    offset: u64,
}

impl fmt::Debug for CrashWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashWriter").field("handle", &self.handle).field("offset", &self.offset).finish()
    }
}

impl Write for CrashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inode = self.handle.inode;
        let mut state = self.handle.fs.lock();
        state.check_alive()?;
        let fitting_bytes = state.fitting_bytes(inode, self.offset, buf.len() as u64);
        if fitting_bytes == 0 && !buf.is_empty() {
            return Err(no_space());
        }
        let end = self.offset + fitting_bytes;
        if let Some(tracked) = state.inodes.get_mut(&inode) {
            // Save what this write replaces of the durable bytes, for a crash to put back.
            if self.offset < tracked.durable_bytes {
                let mut image = vec![0; (end.min(tracked.durable_bytes) - self.offset) as usize];
                let mut reader = DefaultFileSystem.new_reader(self.handle.real.clone())?;
                let _ = reader.seek(SeekFrom::Start(self.offset))?;
                reader.read_exact(&mut image)?;
                tracked.before_images.push((self.offset, image));
            }
        }
        let written_bytes = self.real.write(&buf[..fitting_bytes as usize])?;
        self.offset += written_bytes as u64;
        if let Some(tracked) = state.inodes.get_mut(&inode) {
            tracked.written_end_bytes = tracked.written_end_bytes.max(self.offset);
        }
        Ok(written_bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.real.flush()
    }
}

impl Seek for CrashWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.offset = self.real.seek(pos)?;
        Ok(self.offset)
    }
}

impl WriteExt for CrashWriter {
    fn truncate(&mut self, offset: usize) -> io::Result<()> {
        let mut state = self.handle.fs.lock();
        state.check_alive()?;
        self.real.truncate(offset)?;
        self.offset = offset as u64;
        state.note_truncate(self.handle.inode, offset as u64);
        Ok(())
    }

    fn allocate(&mut self, offset: usize, size: usize) -> io::Result<()> {
        self.handle.fs.lock().check_alive()?;
        self.real.allocate(offset, size)
    }
}

#[cfg(test)]
mod tests {
    use raft_engine::{Config, Engine, LogBatch};

    use super::*;

    /// One raft group (region) per test is enough.
    const REGION: u64 = 1;

    fn open(dir: &Path, fs: &CrashFs) -> Engine<CrashFs> {
        let cfg = Config { dir: dir.display().to_string(), ..Default::default() };
        Engine::open_with_file_system(cfg, Arc::new(fs.clone())).expect("open engine")
    }

    fn put(engine: &Engine<CrashFs>, key: &[u8], value: &[u8], sync: bool) -> raft_engine::Result<usize> {
        let mut batch = LogBatch::default();
        batch.put(REGION, key.to_vec(), value.to_vec()).expect("not an internal key");
        engine.write(&mut batch, sync)
    }

    /// Writes k1 and k2 synced and k3 unsynced, then cuts the power with this torn tail.
    fn crash_after_unsynced_write(tail: TornTail) -> (Engine<CrashFs>, CrashReport, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = CrashFs::new();
        let engine = open(dir.path(), &fs);
        put(&engine, b"k1", b"v1", true).expect("write k1");
        put(&engine, b"k2", &[2; 300], true).expect("write k2");
        put(&engine, b"k3", &[3; 300], false).expect("write k3");
        fs.freeze();
        assert!(put(&engine, b"k4", b"v4", false).is_err(), "a frozen fs takes no writes");
        drop(engine);
        let mut asked = Vec::new();
        let report = fs
            .crash(|path, unsynced_bytes| {
                asked.push((path.to_owned(), unsynced_bytes));
                TornTail { kept_bytes: tail.kept_bytes.min(unsynced_bytes), garbled: tail.garbled }
            })
            .expect("crash");
        assert_eq!(asked.len(), 1, "only the active file has unsynced bytes: {asked:?}");
        assert!(asked[0].1 > 300, "k3's batch is unsynced: {asked:?}");
        (open(dir.path(), &fs), report, dir)
    }

    /// The change line of the append queue's log file.
    fn raftlog_change(report: &CrashReport) -> &str {
        report.changes.iter().find(|change| change.contains(".raftlog: ")).map_or("", String::as_str)
    }

    #[test]
    fn raft_fs_crash_keeps_synced_writes_and_drops_unsynced_ones() {
        let (engine, report, _dir) = crash_after_unsynced_write(TornTail::default());
        assert_eq!(engine.get(REGION, b"k1").as_deref(), Some(&b"v1"[..]));
        assert_eq!(engine.get(REGION, b"k2"), Some(vec![2; 300]));
        assert_eq!(engine.get(REGION, b"k3"), None, "{report:?}");
        assert!(report.lost_bytes > 300, "{report:?}");
        // The rewrite queue's file was created at open and never synced.
        assert!(report.changes.iter().any(|change| change.contains(".rewrite: vanished")), "{report:?}");
        // The recovered log takes writes again.
        put(&engine, b"k5", b"v5", true).expect("write after recovery");
        assert_eq!(engine.get(REGION, b"k5").as_deref(), Some(&b"v5"[..]));
    }

    #[test]
    fn raft_fs_torn_tail_is_dropped_at_recovery() {
        let (engine, report, _dir) = crash_after_unsynced_write(TornTail { kept_bytes: 100, garbled: false });
        assert!(raftlog_change(&report).contains("(torn: 100 unsynced bytes kept)"), "{report:?}");
        assert_eq!(engine.get(REGION, b"k2"), Some(vec![2; 300]));
        assert_eq!(engine.get(REGION, b"k3"), None);
    }

    #[test]
    fn raft_fs_garbled_tail_is_dropped_at_recovery() {
        let (engine, report, _dir) = crash_after_unsynced_write(TornTail { kept_bytes: u64::MAX, garbled: true });
        assert!(raftlog_change(&report).contains("; last byte garbled)"), "{report:?}");
        assert_eq!(engine.get(REGION, b"k2"), Some(vec![2; 300]));
        assert_eq!(engine.get(REGION, b"k3"), None, "the checksum catches the garbled byte");
    }

    #[test]
    fn raft_fs_unsynced_bytes_written_back_survive() {
        let (engine, report, _dir) = crash_after_unsynced_write(TornTail { kept_bytes: u64::MAX, garbled: false });
        let change = raftlog_change(&report);
        let (before, after) = change.split_once(" -> ").expect("a change line");
        let length = |text: &str| text.split(' ').find_map(|word| word.parse::<u64>().ok());
        assert_eq!(length(before.rsplit(' ').next().unwrap_or_default()), length(after), "nothing cut: {report:?}");
        assert_eq!(engine.get(REGION, b"k3"), Some(vec![3; 300]));
    }

    #[test]
    fn raft_fs_files_and_renames_need_a_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = CrashFs::new();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        let handle = Arc::new(fs.create(&a).expect("create a"));
        let mut writer = fs.new_writer(handle.clone()).expect("writer");
        writer.write_all(b"durable").expect("write");
        handle.sync().expect("sync");
        // Overwrite in place, rename, never sync: both revert.
        let _ = writer.seek(SeekFrom::Start(0)).expect("seek");
        writer.write_all(b"DURABLE+more").expect("overwrite");
        fs.rename(&a, &b).expect("rename");
        let never_synced = Arc::new(fs.create(&c).expect("create c"));
        fs.new_writer(never_synced).expect("writer").write_all(b"lost").expect("write");
        fs.freeze();
        assert!(fs.create(dir.path().join("d")).is_err() && fs.delete(&b).is_err());
        handle.sync().expect("a frozen sync succeeds");
        let report = fs.crash(|_, _| TornTail::default()).expect("crash");
        assert_eq!(std::fs::read(&a).expect("a is back"), b"durable");
        assert!(!b.exists() && !c.exists(), "{report:?}");
        assert_eq!(report.lost_bytes, 4 + 7 + 5, "{report:?}");
        // After a sync the rename holds.
        fs.rename(&a, &b).expect("rename");
        Arc::new(fs.open(&b, Permission::ReadWrite).expect("open b")).sync().expect("sync");
        fs.freeze();
        let _ = fs.crash(|_, _| TornTail::default()).expect("crash");
        assert!(!a.exists() && b.exists());
    }

    #[test]
    fn raft_fs_full_disk_writes_a_prefix_then_fails_with_nospace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = CrashFs::new();
        let handle = Arc::new(fs.create(dir.path().join("a")).expect("create"));
        let mut writer = fs.new_writer(handle).expect("writer");
        writer.write_all(b"0123").expect("write");
        fs.set_capacity(Some(6));
        let error = writer.write_all(b"4567").expect_err("full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(error.to_string().contains("nospace"), "raft-engine must recognise {error}");
        assert_eq!(std::fs::read(dir.path().join("a")).expect("read"), b"012345");
        fs.set_capacity(None);
        writer.write_all(b"67").expect("space is back");
        assert_eq!(fs.used_bytes(), 8);
    }

    #[test]
    fn raft_fs_engine_write_fails_on_a_full_disk_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = CrashFs::new();
        let engine = open(dir.path(), &fs);
        put(&engine, b"k1", b"v1", true).expect("write k1");
        fs.set_capacity(Some(fs.used_bytes() + 100));
        assert!(put(&engine, b"k2", &[2; 1000], true).is_err());
        fs.set_capacity(None);
        put(&engine, b"k3", b"v3", true).expect("space is back");
        drop(engine);
        let engine = open(dir.path(), &fs);
        assert_eq!(engine.get(REGION, b"k1").as_deref(), Some(&b"v1"[..]));
        assert_eq!(engine.get(REGION, b"k3").as_deref(), Some(&b"v3"[..]));
    }
}
