//! The controller's Raft log store: raft-rs entries, hard state, conf state and the latest
//! snapshot, kept in raft-engine.
//!
//! # Design
//!
//! raft-engine does its own file I/O through its `FileSystem` trait (production passes
//! raft-engine's default file system; the simulator passes one that loses unsynced bytes on a
//! power failure). Two of its properties decide the shape of this module:
//!
//! * its entry-block read cache is thread-local and keyed only by file handle, so two engines
//!   on one OS thread (every node of a simulation shares one) could read each other's blocks;
//! * it blocks on file I/O.
//!
//! So each store owns one dedicated OS thread ([`rt::thread::spawn`]) that opens the engine and
//! runs every call on it; [`RaftLogStore::write`] is a blocking round trip to that thread. The
//! controller keeps the log it needs in memory and only *writes* through this store while it
//! runs; reading happens once, in [`RaftLogStore::open`], to rebuild that memory.
//!
//! # Layout
//!
//! One raft-engine group ([`METADATA_GROUP`]) holds the entries; its key-value side holds the
//! hard state, the conf state and the latest snapshot (metadata and data), each written in the
//! same atomic, fsynced batch as the entries it goes with. Installing a snapshot discards every
//! entry (raft-rs replaces its whole log with a restored snapshot): the batch first compacts
//! the group past any index, then stores the snapshot, then appends the entries after it.
//! Compacting after a locally taken snapshot drops the entries it covers; whole files are
//! reclaimed by [`RaftLogStore::purge`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft_engine::env::FileSystem;
use raft_engine::{Command, Config, Engine, LogBatch, MessageExt, ReadableSize};

use crate::error::StorageError;

/// The raft-engine group holding the metadata log.
pub const METADATA_GROUP: u64 = 1;
const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// Size of raft-engine's log files before it rotates.
const TARGET_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// raft-engine's view of a raft-rs entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

/// One atomic, fsynced change to the store.
#[derive(Debug, Clone, Default)]
pub struct RaftWrite {
    /// A snapshot to install (restored from the leader or taken locally with `discard_log`
    /// false): stored before `entries`.
    pub snapshot: Option<Snapshot>,
    /// When `snapshot` is set: drop every stored entry (a restored snapshot replaces the log).
    pub discard_log: bool,
    /// Entries to append; an entry at or below the last stored index replaces the tail from
    /// there.
    pub entries: Vec<Entry>,
    /// The new hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// The new conf state, if it changed.
    pub conf_state: Option<ConfState>,
    /// Drop the entries below this index (they are covered by the stored snapshot).
    pub compact_to: Option<u64>,
}

/// What [`RaftLogStore::open`] found on disk.
#[derive(Debug, Clone, Default)]
pub struct RecoveredRaftLog {
    /// The last stored hard state (default if none).
    pub hard_state: HardState,
    /// The last stored conf state, if any (none on a fresh store).
    pub conf_state: Option<ConfState>,
    /// The latest stored snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The stored entries after the snapshot, in index order and contiguous.
    pub entries: Vec<Entry>,
}

impl RecoveredRaftLog {
    /// True if the store held nothing (a node's first start).
    pub fn is_empty(&self) -> bool {
        self.conf_state.is_none() && self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.term == 0
    }
}

type Reply<T> = mpsc::SyncSender<Result<T, StorageError>>;

enum Job {
    Write(Box<RaftWrite>, Reply<()>),
    Purge(Reply<()>),
}

/// The store; dropping it stops its thread and closes the engine.
#[derive(Debug)]
pub struct RaftLogStore {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

fn engine_error(context: &str) -> impl FnOnce(raft_engine::Error) -> StorageError + '_ {
    move |error| StorageError::RaftLog { detail: format!("{context}: {error}") }
}

fn gone() -> StorageError {
    StorageError::RaftLog { detail: "the raft log store's thread has stopped".to_owned() }
}

impl RaftLogStore {
    /// Opens (or creates) the store in `dir` on its own thread and reads back what it holds.
    ///
    /// # Errors
    /// [`StorageError::RaftLog`] if the directory cannot be created, the engine does not open
    /// (corruption it cannot tolerate, I/O errors, another process holds its lock) or the
    /// stored state does not decode.
    pub fn open<F: FileSystem + 'static>(
        file_system: Arc<F>,
        dir: &Path,
    ) -> Result<(RaftLogStore, RecoveredRaftLog), StorageError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (opened, opened_receiver) = mpsc::sync_channel::<Result<RecoveredRaftLog, StorageError>>(1);
        let engine_dir = dir.to_owned();
        let name = format!("raft-log-{}", dir.file_name().and_then(|name| name.to_str()).unwrap_or("store"));
        let thread = rt::thread::spawn(name, move || {
            let engine = match open_engine(file_system, &engine_dir) {
                Ok((engine, recovered)) => {
                    let _ = opened.send(Ok(recovered));
                    engine
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                    return;
                }
            };
            while let Ok(job) = receiver.recv() {
                match job {
                    Job::Write(write, reply) => {
                        let _ = reply.send(apply_write(&engine, *write));
                    }
                    Job::Purge(reply) => {
                        let result = engine.purge_expired_files().map(|_| ()).map_err(engine_error("purge"));
                        let _ = reply.send(result);
                    }
                }
            }
            // The engine closes here, on its own thread.
            drop(engine);
        })
        .map_err(|error| StorageError::RaftLog { detail: format!("cannot start the raft log thread: {error}") })?;
        let recovered = opened_receiver.recv().map_err(|_| gone())?;
        match recovered {
            Ok(recovered) => {
                Ok((RaftLogStore { jobs: Some(jobs), thread: Some(thread), dir: dir.to_owned() }, recovered))
            }
            Err(error) => {
                let _ = thread.join();
                Err(error)
            }
        }
    }

    /// [`RaftLogStore::open`] on the operating system's files.
    ///
    /// # Errors
    /// As [`RaftLogStore::open`].
    pub fn open_os(dir: &Path) -> Result<(RaftLogStore, RecoveredRaftLog), StorageError> {
        RaftLogStore::open(Arc::new(raft_engine::env::DefaultFileSystem), dir)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn call(&self, job: impl FnOnce(Reply<()>) -> Job) -> Result<(), StorageError> {
        let (reply, receiver) = mpsc::sync_channel(1);
        self.jobs.as_ref().ok_or_else(gone)?.send(job(reply)).map_err(|_| gone())?;
        receiver.recv().map_err(|_| gone())?
    }

    /// Writes `write` as one atomic batch and fsyncs it. Blocks until it is durable.
    ///
    /// # Errors
    /// [`StorageError::RaftLog`] on any failure; the caller must treat it as fatal (what is
    /// on disk is then unknown).
    pub fn write(&self, write: RaftWrite) -> Result<(), StorageError> {
        self.call(|reply| Job::Write(Box::new(write), reply))
    }

    /// Deletes raft-engine files that hold only compacted entries.
    ///
    /// # Errors
    /// [`StorageError::RaftLog`].
    pub fn purge(&self) -> Result<(), StorageError> {
        self.call(Job::Purge)
    }
}

impl Drop for RaftLogStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type OpenedEngine<F> = Engine<F>;

fn open_engine<F: FileSystem + 'static>(
    file_system: Arc<F>,
    dir: &Path,
) -> Result<(OpenedEngine<F>, RecoveredRaftLog), StorageError> {
    std::fs::create_dir_all(dir)
        .map_err(|error| StorageError::RaftLog { detail: format!("cannot create {}: {error}", dir.display()) })?;
    let config = Config {
        dir: dir.to_string_lossy().into_owned(),
        target_file_size: ReadableSize(TARGET_FILE_BYTES),
        // Metadata entries are small; compressing them buys nothing.
        batch_compression_threshold: ReadableSize(0),
        ..Config::default()
    };
    let engine = Engine::open_with_file_system(config, file_system).map_err(engine_error("open"))?;
    let mut recovered = RecoveredRaftLog {
        hard_state: engine
            .get_message::<HardState>(METADATA_GROUP, HARD_STATE_KEY)
            .map_err(engine_error("read hard state"))?
            .unwrap_or_default(),
        conf_state: engine
            .get_message::<ConfState>(METADATA_GROUP, CONF_STATE_KEY)
            .map_err(engine_error("read conf state"))?,
        snapshot: engine
            .get_message::<Snapshot>(METADATA_GROUP, SNAPSHOT_KEY)
            .map_err(engine_error("read snapshot"))?,
        entries: Vec::new(),
    };
    if let (Some(first), Some(last)) = (engine.first_index(METADATA_GROUP), engine.last_index(METADATA_GROUP)) {
        let _ = engine
            .fetch_entries_to::<EntryExt>(METADATA_GROUP, first, last + 1, None, &mut recovered.entries)
            .map_err(engine_error("read entries"))?;
    }
    // Entries the snapshot covers are not part of the log any more.
    if let Some(snapshot) = &recovered.snapshot {
        let covered = snapshot.get_metadata().index;
        recovered.entries.retain(|entry| entry.index > covered);
    }
    let contiguous = recovered.entries.windows(2).all(|pair| pair[1].index == pair[0].index + 1);
    if !contiguous {
        return Err(StorageError::RaftLog { detail: "stored entries are not contiguous".to_owned() });
    }
    Ok((engine, recovered))
}

fn apply_write<F: FileSystem + 'static>(engine: &OpenedEngine<F>, write: RaftWrite) -> Result<(), StorageError> {
    let mut batch = LogBatch::default();
    if let Some(snapshot) = &write.snapshot {
        if write.discard_log {
            batch.add_command(METADATA_GROUP, Command::Compact { index: u64::MAX });
        }
        batch.put_message(METADATA_GROUP, SNAPSHOT_KEY.to_vec(), snapshot).map_err(engine_error("encode snapshot"))?;
        let conf_state = snapshot.get_metadata().get_conf_state();
        batch
            .put_message(METADATA_GROUP, CONF_STATE_KEY.to_vec(), conf_state)
            .map_err(engine_error("encode conf state"))?;
    }
    if !write.entries.is_empty() {
        batch.add_entries::<EntryExt>(METADATA_GROUP, &write.entries).map_err(engine_error("encode entries"))?;
    }
    if let Some(hard_state) = &write.hard_state {
        batch
            .put_message(METADATA_GROUP, HARD_STATE_KEY.to_vec(), hard_state)
            .map_err(engine_error("encode hard state"))?;
    }
    if let Some(conf_state) = &write.conf_state {
        batch
            .put_message(METADATA_GROUP, CONF_STATE_KEY.to_vec(), conf_state)
            .map_err(engine_error("encode conf state"))?;
    }
    if let Some(index) = write.compact_to {
        batch.add_command(METADATA_GROUP, Command::Compact { index });
    }
    if batch.is_empty() {
        return Ok(());
    }
    let sync = !planted_raft_log_no_fsync();
    let _ = engine.write(&mut batch, sync).map_err(engine_error("write"))?;
    Ok(())
}

/// Planted bug "raft-log-no-fsync": the controller's Raft log is written without fsync, so a
/// power failure can take back votes and entries other controllers counted on. Only with the
/// `planted-bugs` feature and `WEIR_PLANTED_BUG=raft-log-no-fsync`.
fn planted_raft_log_no_fsync() -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == "raft-log-no-fsync")
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_engine::env::DefaultFileSystem;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut entry = Entry::default();
        entry.index = index;
        entry.term = term;
        entry.data = data.to_vec().into();
        entry
    }

    fn open(dir: &Path) -> (RaftLogStore, RecoveredRaftLog) {
        RaftLogStore::open(Arc::new(DefaultFileSystem), dir).expect("open")
    }

    #[test]
    fn entries_hard_state_and_snapshots_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft");
        let (store, recovered) = open(&path);
        assert!(recovered.is_empty());
        let mut hard_state = HardState::default();
        hard_state.term = 3;
        hard_state.vote = 2;
        hard_state.commit = 2;
        let mut conf_state = ConfState::default();
        conf_state.voters = vec![1, 2, 3];
        store
            .write(RaftWrite {
                entries: vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 2, b"c")],
                hard_state: Some(hard_state.clone()),
                conf_state: Some(conf_state.clone()),
                ..RaftWrite::default()
            })
            .expect("write");
        // A new leader replaces the tail from index 3.
        store.write(RaftWrite { entries: vec![entry(3, 3, b"d")], ..RaftWrite::default() }).expect("write");
        drop(store);
        let (store, recovered) = open(&path);
        assert_eq!(recovered.hard_state, hard_state);
        assert_eq!(recovered.conf_state, Some(conf_state.clone()));
        let indexes: Vec<(u64, u64)> = recovered.entries.iter().map(|entry| (entry.index, entry.term)).collect();
        assert_eq!(indexes, vec![(1, 1), (2, 1), (3, 3)]);

        // A local snapshot at 2 compacts what it covers.
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 1;
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        snapshot.data = b"image".to_vec().into();
        store
            .write(RaftWrite { snapshot: Some(snapshot.clone()), compact_to: Some(3), ..RaftWrite::default() })
            .expect("snapshot");
        store.purge().expect("purge");
        drop(store);
        let (store, recovered) = open(&path);
        assert_eq!(recovered.snapshot, Some(snapshot));
        let indexes: Vec<u64> = recovered.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, vec![3]);

        // A restored snapshot from a leader replaces the whole log, then entries follow it.
        let mut restored = Snapshot::default();
        restored.mut_metadata().index = 10;
        restored.mut_metadata().term = 4;
        restored.mut_metadata().set_conf_state(conf_state);
        store
            .write(RaftWrite {
                snapshot: Some(restored),
                discard_log: true,
                entries: vec![entry(11, 4, b"e")],
                ..RaftWrite::default()
            })
            .expect("restore");
        drop(store);
        let (_store, recovered) = open(&path);
        assert_eq!(recovered.snapshot.map(|snapshot| snapshot.get_metadata().index), Some(10));
        let indexes: Vec<u64> = recovered.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, vec![11]);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, _) = open(dir.path());
        let error = RaftLogStore::open(Arc::new(DefaultFileSystem), dir.path()).expect_err("locked");
        assert!(matches!(error, StorageError::RaftLog { .. }), "{error}");
    }
}
