//! `SimDisk`: an in-memory `storage::Disk` that loses what a power cut would lose.
//!
//! # Fault model
//!
//! * **Durability.** Each file (inode) keeps its current bytes and its durable bytes. A write
//!   changes only the current bytes; `sync_data` copies current to durable. Each directory
//!   keeps its current entries and its durable entries; `sync_dir` copies current to durable.
//!   Directories themselves (`create_dir_all`) are durable at once: a simplification, since
//!   weir never relies on an unsynced directory.
//! * **Crash** ([`SimDisk::crash`]): every directory reverts to its durable entries (files
//!   created since the last `sync_dir` of their directory vanish, removed or renamed ones come
//!   back), and every file reverts to its durable bytes, except that when the unsynced change
//!   is a pure append, a random prefix of the appended bytes may survive (a torn write, as a
//!   page cache that wrote back part of the data would leave). Before a crash the scenario
//!   calls [`SimDisk::freeze`]: from then on every operation fails with "power lost" and
//!   nothing more becomes durable, so destructors that run when the node is killed cannot
//!   flush.
//! * **Full disk.** With a capacity set, a write that would exceed it writes the prefix that
//!   fits and fails with `StorageFull` (ENOSPC); `available_bytes` reports what is left.
//! * **Latency.** Each operation may sleep a random time up to the configured bound; fsyncs
//!   have their own bound (slow fsync).
//! * **Not modelled.** Read corruption and misdirected writes (single-node scenarios have no
//!   replica to recover from, so any such fault would be unrecoverable by design).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use storage::{Disk, DiskFile, OpenMode};

/// Tunable faults of one disk.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    /// Total bytes the disk holds; `None` for unlimited.
    pub capacity_bytes: Option<u64>,
    /// Upper bound of random latency per operation, in microseconds.
    pub latency_us_max: u64,
    /// Upper bound of random latency per fsync, in microseconds.
    pub fsync_latency_us_max: u64,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Directory path -> (entry name -> inode) as the running node sees it.
    directories: BTreeMap<PathBuf, BTreeMap<String, u64>>,
    /// The same, as of each directory's last `sync_dir`.
    durable_directories: BTreeMap<PathBuf, BTreeMap<String, u64>>,
    frozen: bool,
    /// Stall after this many more mutations made while a file named `*{suffix}` exists
    /// (see [`SimDisk::stall_during`]).
    stall_trigger: Option<(String, u32)>,
    /// Every operation waits (until a power cut): the moment a stall trigger chose.
    stalled: bool,
    faults: DiskFaults,
    /// Statistics for traces.
    syncs: u64,
}

impl State {
    /// Bytes of the files that have a name. A removed file's space is free at once: weir never
    /// keeps reading a file it removed, so the space of open-but-unlinked files is ignored.
    fn used_bytes(&self) -> u64 {
        let named: std::collections::BTreeSet<u64> =
            self.directories.values().flat_map(|entries| entries.values().copied()).collect();
        named.iter().filter_map(|id| self.inodes.get(id)).map(|inode| inode.current.len() as u64).sum()
    }

    /// Bytes that may still be written, or `None` without a capacity.
    fn room(&self) -> Option<u64> {
        self.faults.capacity_bytes.map(|capacity| capacity.saturating_sub(self.used_bytes()))
    }

    fn split(path: &Path) -> io::Result<(PathBuf, String)> {
        let parent = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?;
        let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        Ok((parent.to_owned(), name.to_string_lossy().into_owned()))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = Self::split(path)?;
        self.directories
            .get(&parent)
            .and_then(|entries| entries.get(&name))
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))
    }

    /// Counts a mutation for the freeze trigger; `path` is the file the operation named
    /// (a rename's source), if any.
    fn after_mutation(&mut self, path: Option<&Path>) {
        let Some((suffix, _)) = &self.stall_trigger else { return };
        let named = path.is_some_and(|path| path.to_string_lossy().ends_with(suffix.as_str()));
        if !named
            && !self.directories.values().flat_map(|entries| entries.keys()).any(|name| name.ends_with(suffix.as_str()))
        {
            return;
        }
        match self.stall_trigger.as_mut() {
            Some((_, 0)) => {
                self.stall_trigger = None;
                self.stalled = true;
            }
            Some((_, remaining)) => *remaining -= 1,
            None => {}
        }
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.frozen {
            return Err(io::Error::other("power lost"));
        }
        Ok(())
    }
}

/// What a crash took back.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    /// Bytes that were readable before the crash and are gone.
    pub lost_bytes: u64,
    /// One line per file that changed: truncated, torn, vanished or reappeared.
    pub changes: Vec<String>,
}

/// A simulated disk shared by every incarnation of one node.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk with these faults.
    pub fn new(faults: DiskFaults) -> SimDisk {
        let disk = SimDisk::default();
        disk.lock().faults = faults;
        disk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("SimDisk lock is never poisoned")
    }

    /// Power cut, step one: every later operation fails and nothing more becomes durable.
    pub fn freeze(&self) {
        self.lock().frozen = true;
    }

    /// Power cut, step two: drop what was not durable (tearing appends at random), then power
    /// back on. Returns what was lost, for the trace.
    pub fn crash(&self) -> CrashReport {
        let mut state = self.lock();
        let mut rng = thread_rng();
        let mut report = CrashReport::default();
        // Paths as the running node saw them, to name what is lost.
        let mut paths: BTreeMap<u64, PathBuf> = BTreeMap::new();
        for (dir, entries) in &state.directories {
            for (name, inode) in entries {
                let _ = paths.insert(*inode, dir.join(name));
            }
        }
        state.directories = state.durable_directories.clone();
        let referenced: std::collections::BTreeSet<u64> =
            state.directories.values().flat_map(|entries| entries.values().copied()).collect();
        for (id, inode) in state.inodes.iter_mut() {
            let path =
                paths.get(id).map_or_else(|| format!("<unlinked inode {id}>"), |path| path.display().to_string());
            if !referenced.contains(id) {
                if paths.contains_key(id) {
                    report.lost_bytes += inode.current.len() as u64;
                    report.changes.push(format!("{path}: vanished ({} bytes, name not synced)", inode.current.len()));
                }
                continue;
            }
            let appended_only = inode.current.len() > inode.durable.len() && inode.current.starts_with(&inode.durable);
            let survivors = if appended_only && rng.gen_bool(0.5) {
                rng.gen_range(0..=inode.current.len() - inode.durable.len())
            } else {
                0
            };
            let kept = inode.durable.len() + survivors;
            if inode.current.len() != kept || (!appended_only && inode.current != inode.durable) {
                // Bytes the node could read before that now read differently or not at all.
                report.lost_bytes += if appended_only {
                    (inode.current.len() - kept) as u64
                } else {
                    inode.current.iter().enumerate().filter(|(at, byte)| inode.durable.get(*at) != Some(*byte)).count()
                        as u64
                };
                let torn =
                    if survivors > 0 { format!(" (torn: {survivors} unsynced bytes kept)") } else { String::new() };
                report.changes.push(format!("{path}: {} -> {kept} bytes{torn}", inode.current.len()));
            }
            if appended_only {
                inode.current.truncate(kept);
            } else {
                inode.current = inode.durable.clone();
            }
            inode.durable = inode.current.clone();
        }
        // Files that come back (removed or renamed since their directory's last sync).
        for (dir, entries) in &state.directories {
            for (name, inode) in entries {
                if paths.get(inode) != Some(&dir.join(name)) {
                    report
                        .changes
                        .push(format!("{}: reappeared (removal or rename not synced)", dir.join(name).display()));
                }
            }
        }
        state.inodes.retain(|id, _| referenced.contains(id));
        state.frozen = false;
        state.stalled = false;
        state.stall_trigger = None;
        report
    }

    /// The kernel writes back everything a process left in the page cache (file data and
    /// directory entries), as it eventually does after the process exits. Returns the bytes
    /// that became durable.
    pub fn writeback(&self) -> u64 {
        let mut state = self.lock();
        let mut written = 0u64;
        for inode in state.inodes.values_mut() {
            if inode.durable != inode.current {
                written += inode.current.len().abs_diff(inode.durable.len()) as u64;
                inode.durable = inode.current.clone();
            }
        }
        state.durable_directories = state.directories.clone();
        written
    }

    /// Changes the capacity (disk full / space returns).
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().faults.capacity_bytes = capacity_bytes;
    }

    /// The capacity in force, `None` for unlimited.
    pub fn capacity(&self) -> Option<u64> {
        self.lock().faults.capacity_bytes
    }

    /// Changes the latency bounds (slow disk / slow fsync windows).
    pub fn set_latency(&self, latency_us_max: u64, fsync_latency_us_max: u64) {
        let mut state = self.lock();
        state.faults.latency_us_max = latency_us_max;
        state.faults.fsync_latency_us_max = fsync_latency_us_max;
    }

    /// Bytes currently stored.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Picks the moment of a power cut in the middle of some work: right after the `after`-th
    /// mutation (write, set_len, fsync, rename, removal, directory sync) made while a file
    /// named `*{suffix}` exists, or that renames or removes one, the disk stalls: that mutation
    /// takes effect, every later operation waits. The nemesis sees [`SimDisk::is_stalled`] and
    /// cuts the power ([`SimDisk::freeze`], kill, [`SimDisk::crash`]), so the node dies exactly
    /// there, with nothing failing first.
    pub fn stall_during(&self, suffix: &str, after: u32) {
        self.lock().stall_trigger = Some((suffix.to_owned(), after));
    }

    /// Disarms [`SimDisk::stall_during`] (a stall already reached stays until the crash).
    pub fn disarm_stall(&self) {
        self.lock().stall_trigger = None;
    }

    /// True once a stall trigger fired.
    pub fn is_stalled(&self) -> bool {
        self.lock().stalled
    }

    /// Fsyncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    async fn delay(&self, fsync: bool) {
        while self.lock().stalled {
            madsim::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let bound = {
            let state = self.lock();
            if fsync {
                state.faults.fsync_latency_us_max
            } else {
                state.faults.latency_us_max
            }
        };
        if bound > 0 {
            let wait = thread_rng().gen_range(0..=bound);
            madsim::time::sleep(std::time::Duration::from_micros(wait)).await;
        }
    }
}

#[async_trait]
impl Disk for SimDisk {
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.delay(false).await;
        let mut state = self.lock();
        state.check_alive()?;
        for ancestor in path.ancestors() {
            let _ = state.directories.entry(ancestor.to_owned()).or_default();
            let _ = state.durable_directories.entry(ancestor.to_owned()).or_default();
        }
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.delay(false).await;
        let state = self.lock();
        state.check_alive()?;
        let mut names: Vec<String> = state
            .directories
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))?
            .keys()
            .cloned()
            .collect();
        let prefix = path.to_owned();
        names.extend(
            state
                .directories
                .keys()
                .filter(|dir| dir.parent() == Some(prefix.as_path()))
                .filter_map(|dir| dir.file_name().map(|name| name.to_string_lossy().into_owned())),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        self.delay(false).await;
        let mut state = self.lock();
        state.check_alive()?;
        let (parent, name) = State::split(path)?;
        if !state.directories.contains_key(&parent) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", parent.display())));
        }
        let existing = state.directories[&parent].get(&name).copied();
        let inode = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists")),
            (Some(inode), _) => inode,
            (None, OpenMode::Existing) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))
            }
            (None, _) => {
                state.next_inode += 1;
                let inode = state.next_inode;
                let _ = state.inodes.insert(inode, Inode::default());
                tracing::debug!(path = %path.display(), inode, "simdisk: create");
                let _ = state.directories.get_mut(&parent).expect("checked above").insert(name, inode);
                inode
            }
        };
        Ok(Arc::new(SimFile { disk: self.clone(), inode }))
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.delay(false).await;
        let mut state = self.lock();
        state.check_alive()?;
        let _ = state.lookup(path)?;
        let (parent, name) = State::split(path)?;
        tracing::debug!(path = %path.display(), "simdisk: remove");
        let _ = state.directories.get_mut(&parent).expect("lookup succeeded").remove(&name);
        state.after_mutation(Some(path));
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.delay(false).await;
        let mut state = self.lock();
        state.check_alive()?;
        if !state.directories.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
        }
        // Directory removal is durable at once, like creation (see the fault model).
        state.directories.retain(|dir, _| !dir.starts_with(path));
        state.durable_directories.retain(|dir, _| !dir.starts_with(path));
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.delay(false).await;
        let mut state = self.lock();
        state.check_alive()?;
        let inode = state.lookup(from)?;
        let (from_parent, from_name) = State::split(from)?;
        let (to_parent, to_name) = State::split(to)?;
        if !state.directories.contains_key(&to_parent) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "target directory not found"));
        }
        tracing::debug!(from = %from.display(), to = %to.display(), "simdisk: rename");
        let _ = state.directories.get_mut(&from_parent).expect("lookup succeeded").remove(&from_name);
        let _ = state.directories.get_mut(&to_parent).expect("checked above").insert(to_name, inode);
        state.after_mutation(Some(from));
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.delay(true).await;
        let mut state = self.lock();
        state.check_alive()?;
        let entries = state
            .directories
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such directory"))?;
        tracing::debug!(path = %path.display(), entries = entries.len(), "simdisk: sync_dir");
        let _ = state.durable_directories.insert(path.to_owned(), entries);
        state.syncs += 1;
        state.after_mutation(None);
        Ok(())
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        state.check_alive()?;
        Ok(state.directories.contains_key(path) || state.lookup(path).is_ok())
    }

    async fn available_bytes(&self, _path: &Path) -> io::Result<u64> {
        let state = self.lock();
        state.check_alive()?;
        Ok(state.room().unwrap_or(u64::MAX / 4))
    }
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
}

impl SimFile {
    fn with_inode<R>(&self, work: impl FnOnce(&mut State, u64) -> io::Result<R>) -> io::Result<R> {
        let mut state = self.disk.lock();
        state.check_alive()?;
        if !state.inodes.contains_key(&self.inode) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "file was removed by a crash"));
        }
        work(&mut state, self.inode)
    }
}

#[async_trait]
impl DiskFile for SimFile {
    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Bytes> {
        self.disk.delay(false).await;
        self.with_inode(|state, inode| {
            let data = &state.inodes[&inode].current;
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(length).min(data.len());
            Ok(Bytes::copy_from_slice(&data[start..end]))
        })
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> io::Result<()> {
        self.disk.delay(false).await;
        self.with_inode(|state, inode| {
            let file_length = state.inodes[&inode].current.len() as u64;
            let end_wanted = offset + data.len() as u64;
            let growth = end_wanted.saturating_sub(file_length);
            let room = state.room().unwrap_or(u64::MAX);
            // On a full disk the file may grow only up to `room` bytes: the prefix of `data`
            // that ends there is written (possibly nothing, if even the gap does not fit).
            let (fits, full) = if growth > room {
                let end_allowed = end_wanted.min(file_length + room);
                (end_allowed.saturating_sub(offset) as usize, true)
            } else {
                (data.len(), false)
            };
            let file = &mut state.inodes.get_mut(&inode).expect("checked").current;
            let start = offset as usize;
            if full && fits == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
            }
            if file.len() < start {
                file.resize(start, 0);
            }
            let end = start + fits;
            if file.len() < end {
                file.resize(end, 0);
            }
            file[start..end].copy_from_slice(&data[..fits]);
            if full {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
            }
            state.after_mutation(None);
            Ok(())
        })
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.disk.delay(true).await;
        self.with_inode(|state, inode| {
            let entry = state.inodes.get_mut(&inode).expect("checked");
            entry.durable = entry.current.clone();
            state.syncs += 1;
            state.after_mutation(None);
            Ok(())
        })
    }

    async fn set_len(&self, length: u64) -> io::Result<()> {
        self.disk.delay(false).await;
        self.with_inode(|state, inode| {
            state.inodes.get_mut(&inode).expect("checked").current.resize(length as usize, 0);
            state.after_mutation(None);
            Ok(())
        })
    }

    async fn len(&self) -> io::Result<u64> {
        self.with_inode(|state, inode| Ok(state.inodes[&inode].current.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(disk: &SimDisk, path: &str, data: &'static [u8]) -> Arc<dyn DiskFile> {
        let file = disk.open_file(Path::new(path), OpenMode::CreateOrOpen).await.expect("open");
        let length = file.len().await.expect("len");
        file.write_at(length, Bytes::from_static(data)).await.expect("write");
        file
    }

    async fn read_all(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
        let file = disk.open_file(Path::new(path), OpenMode::Existing).await.ok()?;
        let length = file.len().await.expect("len");
        Some(file.read_at(0, length as usize).await.expect("read").to_vec())
    }

    #[tokio::test]
    async fn a_crash_keeps_exactly_what_was_synced() {
        let disk = SimDisk::default();
        disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
        // Synced data and name: survives.
        let file = write(&disk, "/d/a", b"hello").await;
        file.sync_data().await.expect("sync");
        disk.sync_dir(Path::new("/d")).await.expect("sync dir");
        // Unsynced overwrite of a synced file: reverts.
        file.write_at(0, Bytes::from_static(b"HELLO")).await.expect("overwrite");
        // Synced data, unsynced name: vanishes.
        let other = write(&disk, "/d/b", b"data").await;
        other.sync_data().await.expect("sync");
        disk.freeze();
        assert!(file.sync_data().await.is_err(), "a frozen disk makes nothing durable");
        let report = disk.crash();
        assert_eq!(read_all(&disk, "/d/a").await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_all(&disk, "/d/b").await, None);
        assert!(report.changes.iter().any(|change| change.contains("/d/b: vanished")), "{report:?}");
        assert_eq!(report.lost_bytes, 4 + 5, "{report:?}");
    }

    #[tokio::test]
    async fn a_crash_may_tear_an_append_but_keeps_a_prefix() {
        for _ in 0..20 {
            let disk = SimDisk::default();
            disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
            let file = write(&disk, "/d/a", b"base").await;
            file.sync_data().await.expect("sync");
            disk.sync_dir(Path::new("/d")).await.expect("sync dir");
            file.write_at(4, Bytes::from_static(b"-appended")).await.expect("append");
            disk.freeze();
            let _ = disk.crash();
            let survived = read_all(&disk, "/d/a").await.expect("file survives");
            assert!(b"base-appended".starts_with(&survived) && survived.len() >= 4, "{survived:?}");
        }
    }

    #[tokio::test]
    async fn removal_and_rename_need_a_directory_sync() {
        let disk = SimDisk::default();
        disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
        let file = write(&disk, "/d/tmp", b"x").await;
        file.sync_data().await.expect("sync");
        disk.sync_dir(Path::new("/d")).await.expect("sync dir");
        disk.rename(Path::new("/d/tmp"), Path::new("/d/final")).await.expect("rename");
        disk.freeze();
        let report = disk.crash();
        assert_eq!(disk.list_dir(Path::new("/d")).await.expect("list"), vec!["tmp".to_owned()]);
        assert!(report.changes.iter().any(|change| change.contains("reappeared")), "{report:?}");
        disk.rename(Path::new("/d/tmp"), Path::new("/d/final")).await.expect("rename");
        disk.sync_dir(Path::new("/d")).await.expect("sync dir");
        disk.freeze();
        let _ = disk.crash();
        assert_eq!(disk.list_dir(Path::new("/d")).await.expect("list"), vec!["final".to_owned()]);
    }

    #[tokio::test]
    async fn a_full_disk_writes_a_prefix_and_reports_enospc() {
        let disk = SimDisk::default();
        disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
        let file = write(&disk, "/d/a", b"0123").await;
        disk.set_capacity(Some(6));
        assert_eq!(disk.available_bytes(Path::new("/d")).await.expect("available"), 2);
        let error = file.write_at(4, Bytes::from_static(b"4567")).await.expect_err("full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(read_all(&disk, "/d/a").await.as_deref(), Some(&b"012345"[..]));
        // A write far past the end that cannot even fill the gap writes nothing.
        assert!(file.write_at(100, Bytes::from_static(b"x")).await.is_err());
        assert_eq!(file.len().await.expect("len"), 6);
        // Removing a file frees its space at once.
        disk.remove_file(Path::new("/d/a")).await.expect("remove");
        assert_eq!(disk.used_bytes(), 0);
        disk.set_capacity(None);
        file.write_at(6, Bytes::from_static(b"67")).await.expect("space is back");
    }

    #[tokio::test]
    async fn writeback_makes_everything_durable() {
        let disk = SimDisk::default();
        disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
        let _ = write(&disk, "/d/a", b"abc").await;
        assert_eq!(disk.writeback(), 3);
        disk.freeze();
        let report = disk.crash();
        assert_eq!(report.lost_bytes, 0);
        assert_eq!(read_all(&disk, "/d/a").await.as_deref(), Some(&b"abc"[..]));
    }
}
