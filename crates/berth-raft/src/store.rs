//! The sled-backed Raft store.
//!
//! One sled database per control node, two trees:
//! - `log`: entries keyed by big-endian index (so key order is index order);
//! - `meta`: vote, committed log id, last purged log id.
//!
//! The latest snapshot is a file beside them (`berth-snapshot` in the same directory),
//! replaced atomically. It is kept out of sled because openraft's Raft loop waits for every
//! log append, vote and commit point to be flushed, and a multi-megabyte value in sled is
//! written by those same flushes.
//!
//! The state machine itself lives in memory ([`ClusterState`]) and is rebuilt on start from
//! the latest snapshot plus the committed log, which openraft re-applies. That keeps apply
//! fast and the durable part simple: the log is the truth, and nothing is acknowledged
//! before the log entries holding it are flushed (sled flushes all trees at once).

use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use berth_core::state::Change;
use berth_core::{ClusterState, CommandResult};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::broadcast;

use crate::{BerthNode, NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
/// Where stores written before snapshots moved to a file kept them (see `open`).
const OLD_SNAPSHOT_TREE: &str = "snapshot";
const OLD_KEY_SNAPSHOT_META: &[u8] = b"meta";
const OLD_KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// The snapshot file, and the name it is written under before it replaces the last one.
const SNAPSHOT_FILE: &str = "berth-snapshot";
const SNAPSHOT_TMP: &str = "berth-snapshot.tmp";

/// A flush slower than this is logged: openraft's Raft loop (ticks, votes, appends) waits
/// for every flush, so this is how long the node was deaf.
const SLOW_FLUSH: Duration = Duration::from_millis(200);

/// Watchers lag behind at most this many applied entries before they are told to resync;
/// a bound, so a stuck watcher cannot grow memory.
const EVENT_BUFFER: usize = 4096;

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(v)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(b)
}

/// Flushes every tree of the database off the async runtime: an fsync may take
/// milliseconds and must not stall other tasks on the same worker. `what` names the
/// write in the slow-flush warning.
async fn flush(db: &sled::Db, what: &'static str) -> Result<(), std::io::Error> {
    let db = db.clone();
    let started = Instant::now();
    let res = off_runtime(move || db.flush().map(|_| ()).map_err(std::io::Error::other)).await;
    let took = started.elapsed();
    if took >= SLOW_FLUSH {
        tracing::warn!(
            what,
            took_ms = took.as_millis() as u64,
            "slow flush to disk; the Raft loop waited for it"
        );
    }
    res
}

/// Runs blocking work (file I/O, encoding a whole state) off the async runtime's workers,
/// which openraft's Raft loop shares.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, std::io::Error> + Send + 'static,
) -> Result<T, std::io::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Writes a snapshot so that a crash at any point leaves either the previous file or
/// this one: a temporary file, synced, renamed over the last, and the directory synced.
/// Layout: metadata length (u64, big-endian), metadata (JSON), state (see `codec`).
fn write_snapshot_file(dir: &Path, meta: &[u8], data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&(meta.len() as u64).to_be_bytes())?;
    f.write_all(meta)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// The snapshot file's metadata and state bytes, or `None` when there is no snapshot.
fn read_snapshot_file(dir: &Path) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut bytes = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let torn = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{SNAPSHOT_FILE} is shorter than its header says"),
        )
    };
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(torn)?;
    let meta_end = usize::try_from(u64::from_be_bytes(len_bytes))
        .ok()
        .and_then(|len| len.checked_add(8))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(torn)?;
    let data = bytes.split_off(meta_end);
    bytes.drain(..8);
    Ok(Some((bytes, data)))
}

/// Moves a snapshot that an older store kept in sled into the snapshot file. The file is
/// written (durably) before the tree is dropped, so a crash in between only repeats this.
fn migrate_snapshot_out_of_sled(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == OLD_SNAPSHOT_TREE.as_bytes())
    {
        return Ok(());
    }
    let old = db.open_tree(OLD_SNAPSHOT_TREE)?;
    if let (Some(meta), Some(data)) = (
        old.get(OLD_KEY_SNAPSHOT_META)?,
        old.get(OLD_KEY_SNAPSHOT_DATA)?,
    ) {
        if !dir.join(SNAPSHOT_FILE).exists() {
            write_snapshot_file(dir, &meta, &data)?;
            tracing::info!(
                bytes = data.len(),
                "moved the stored snapshot out of sled into {SNAPSHOT_FILE}"
            );
        }
    }
    drop(old);
    db.drop_tree(OLD_SNAPSHOT_TREE)?;
    db.flush()?;
    Ok(())
}

/// Deletes every log entry up to and including `index`.
fn remove_through(log: &sled::Tree, index: u64) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for k in log.range(..=index.to_be_bytes()).keys() {
        batch.remove(k?);
    }
    log.apply_batch(batch)
}

/// Makes the snapshot on disk the start of the log: entries it covers are dropped and the
/// purge point moves up to it.
///
/// A purge asked for while a leader's snapshot was being installed stops at the snapshot
/// then on disk (see `LogStore::purge`), but openraft counts the log as purged through the
/// new snapshot and appends after it. The entries between the two are never written, and
/// on the next start openraft finds a hole right after the purge point and refuses to run
/// (found by the chaos suite, seed 2026: "try to get log at index 32335 but got None"). The
/// snapshot holds everything up to its index, so starting the log there loses nothing;
/// the leader sends what comes after.
fn cover_log_with_snapshot(
    db: &sled::Db,
    log: &sled::Tree,
    meta: &sled::Tree,
    snapshot: Option<LogId<NodeId>>,
) -> Result<(), StoreError> {
    let Some(covered) = snapshot else {
        return Ok(());
    };
    let purged: Option<LogId<NodeId>> = match meta.get(KEY_PURGED)? {
        Some(raw) => decode(&raw)?,
        None => None,
    };
    if purged.is_some_and(|p| p.index >= covered.index) {
        return Ok(());
    }
    // The purge point first, durably, as in `LogStore::purge`.
    meta.insert(KEY_PURGED, encode(&covered)?)?;
    db.flush()?;
    remove_through(log, covered.index)?;
    db.flush()?;
    tracing::info!(
        snapshot = %covered,
        purged_before = ?purged.map(|p| p.index),
        "log now starts at the stored snapshot"
    );
    Ok(())
}

/// Opens (or creates) the store at `path`, returning the log store and the state machine.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachine), StoreError> {
    let db = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let log = db.open_tree("log")?;
    let meta = db.open_tree("meta")?;
    migrate_snapshot_out_of_sled(&db, path)?;
    let installing = Arc::new(AtomicBool::new(false));
    let sm = StateMachine::load(path, installing.clone())?;
    let snapshots = sm.snapshots.clone();
    cover_log_with_snapshot(&db, &log, &meta, snapshots.stored_log_id())?;
    Ok((
        LogStore {
            db,
            log,
            meta,
            snapshots,
            installing,
        },
        sm,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt snapshot in the store: {0}")]
    Snapshot(#[from] serde_json::Error),
    #[error("snapshot in the store: {0}")]
    SnapshotState(#[from] crate::codec::CodecError),
    #[error("snapshot file: {0}")]
    SnapshotFile(#[from] std::io::Error),
    #[error("{0}")]
    Storage(#[from] StorageError<NodeId>),
}

// ---------------------------------------------------------------------------------------
// Log

/// The Raft log, vote and commit index. Cloning shares the same trees (the log reader
/// openraft asks for is just another handle).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Read only: while a snapshot from the leader is being installed, purges stop at
    /// the snapshot already on disk.
    snapshots: SnapshotStore,
    /// Set from the first chunk of a snapshot from the leader until it is stored.
    installing: Arc<AtomicBool>,
}

impl LogStore {
    fn meta_get<T: DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let raw = self
            .meta
            .get(key)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        raw.map(|b| decode(&b))
            .transpose()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn meta_put<T: Serialize>(&self, key: &[u8], v: &T) -> StorageResult<()> {
        let b = encode(v).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.meta
            .insert(key, b)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    fn last_purged(&self) -> StorageResult<Option<LogId<NodeId>>> {
        self.meta_get(KEY_PURGED)
    }

    /// The id of the last entry present, or the purge point when the log is empty.
    fn last_present(&self) -> StorageResult<Option<LogId<NodeId>>> {
        let last = self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match last {
            Some((_, v)) => {
                let e: Entry<TypeConfig> =
                    decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(e.log_id))
            }
            None => self.last_purged(),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, v) = kv.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry: Entry<TypeConfig> =
                decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = self.last_present()?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.meta_put(KEY_VOTE, vote)?;
        // A vote must be durable before it is answered, or a restarted node could vote
        // twice in one term.
        flush(&self.db, "vote")
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.meta_get(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.meta_put(KEY_COMMITTED, &committed)?;
        // Durable before anything at this index is applied and answered. A leader that
        // restarts with its own committed vote resumes leadership without a new term's
        // entry, and serves linearizable reads up to the commit point it read from disk;
        // had that lagged, an acknowledged write would be missing from reads until the
        // next commit (seen in the whole-cluster restart test).
        flush(&self.db, "commit point")
            .await
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let committed = self
            .meta_get::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten();
        // openraft re-applies up to this on start, from this log. While a snapshot from the
        // leader is being installed it may record a commit point the local log never held
        // (the entries come inside the snapshot); if we were killed before that snapshot was
        // stored, re-applying would need entries we do not have. Never claim more than the
        // log holds; the leader tells us the rest.
        Ok(committed.min(self.last_present()?))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let v = encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), v);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Acknowledged means on disk: report completion only after the flush.
        let res = flush(&self.db, "log append").await;
        callback.log_io_completed(res);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let keys: Vec<_> = self
            .log
            .range(log_id.index.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        flush(&self.db, "log truncation")
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // openraft purges as soon as it *decides* to install a snapshot from the leader,
        // while the state machine stores that snapshot on another task. Killed in between,
        // we would hold neither the entries nor the snapshot that replaces them (found by
        // the chaos suite: the node could not start again). So while an install is under
        // way, entries are deleted only up to the snapshot already on disk; the rest go
        // with a later purge.
        let log_id = if self.installing.load(Ordering::Acquire) {
            match self.snapshots.stored_log_id() {
                Some(durable) if durable.index < log_id.index => durable,
                Some(_) => log_id,
                None => return Ok(()),
            }
        } else {
            log_id
        };
        if self.last_purged()?.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // Record the purge point durably first: if we crash half-way through deleting,
        // the log state still reads consistently.
        self.meta_put(KEY_PURGED, &log_id)?;
        flush(&self.db, "purge point")
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        remove_through(&self.log, log_id.index)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

// ---------------------------------------------------------------------------------------
// State machine

/// What applying entries changed, for watchers.
#[derive(Debug, Clone)]
pub enum StateEvent {
    /// Changes made by the entry at `revision`.
    Applied {
        revision: u64,
        changes: Arc<Vec<Change>>,
    },
    /// The state was replaced by a snapshot; watchers must re-read what they follow.
    Reset { revision: u64 },
}

/// The applied state and the two facts openraft needs kept with it. Behind one lock so a
/// snapshot always pairs a state with the log id it reflects.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: ClusterState,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BerthNode>,
}

/// A read handle on the applied state, shared with the API layer.
#[derive(Clone)]
pub struct StateHandle {
    applied: Arc<RwLock<Applied>>,
    events: broadcast::Sender<StateEvent>,
}

impl StateHandle {
    /// Read access. A std lock: critical sections are short and never await, and apply
    /// must not wait behind an async scheduler.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means apply panicked on an invariant; serving reads from that
        // state would spread the damage, so we stop as loudly as the panic did.
        self.applied
            .read()
            .unwrap_or_else(|e| panic!("state lock poisoned: {e}"))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }
}

/// The state machine openraft drives: the applied state in memory, and the snapshot file.
pub struct StateMachine {
    handle: StateHandle,
    snapshots: SnapshotStore,
    /// Shared with the log store; see `LogStore::purge`.
    installing: Arc<AtomicBool>,
}

/// Where snapshots are kept, shared by the state machine (installs), the builders and the
/// log store (purges).
#[derive(Clone)]
struct SnapshotStore {
    dir: PathBuf,
    /// The log id the snapshot file covers, kept in memory so purges need not read it.
    stored: Arc<Mutex<Option<LogId<NodeId>>>>,
    /// Installs and builds run on different tasks; one at a time decides what is stored.
    persist_lock: Arc<tokio::sync::Mutex<()>>,
}

type StoredSnapshot = (SnapshotMeta<NodeId, BerthNode>, Vec<u8>);

impl StateMachine {
    fn load(dir: &Path, installing: Arc<AtomicBool>) -> Result<Self, StoreError> {
        let mut applied = Applied::default();
        let snapshots = SnapshotStore {
            dir: dir.to_path_buf(),
            stored: Arc::default(),
            persist_lock: Arc::default(),
        };
        if let Some((meta, data)) = snapshots.read()? {
            applied.state = crate::codec::decode(&data)?;
            applied.state.rebuild_indexes();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
            snapshots.set_stored(applied.last_applied);
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(StateMachine {
            handle: StateHandle {
                applied: Arc::new(RwLock::new(applied)),
                events,
            },
            snapshots,
            installing,
        })
    }

    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.handle
            .applied
            .write()
            .unwrap_or_else(|e| panic!("state lock poisoned: {e}"))
    }
}

impl SnapshotStore {
    fn stored_log_id(&self) -> Option<LogId<NodeId>> {
        *self
            .stored
            .lock()
            .unwrap_or_else(|e| panic!("snapshot lock poisoned: {e}"))
    }

    fn set_stored(&self, log_id: Option<LogId<NodeId>>) {
        *self
            .stored
            .lock()
            .unwrap_or_else(|e| panic!("snapshot lock poisoned: {e}")) = log_id;
    }

    /// The snapshot on disk, read and decoded (metadata only; the state stays bytes).
    fn read(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let Some((meta, data)) = read_snapshot_file(&self.dir)? else {
            return Ok(None);
        };
        Ok(Some((decode(&meta)?, data)))
    }

    /// Stores `data` as the snapshot `meta` names, unless a newer one is stored already,
    /// and hands the bytes back.
    async fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, BerthNode>,
        data: Vec<u8>,
    ) -> StorageResult<Vec<u8>> {
        // A build that started before an install may finish after it; the older snapshot
        // must not replace the newer one (the log behind it may already be purged).
        let _one_at_a_time = self.persist_lock.lock().await;
        if self.stored_log_id() > meta.last_log_id {
            tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot is already stored; keeping it");
            return Ok(data);
        }
        let sig = Some(meta.signature());
        let m = encode(meta)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)))?;
        let dir = self.dir.clone();
        let started = Instant::now();
        let data = off_runtime(move || write_snapshot_file(&dir, &m, &data).map(|()| data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, AnyError::new(&e)))?;
        self.set_stored(meta.last_log_id);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot written to disk"
        );
        Ok(data)
    }
}

/// Builds snapshots from the shared state.
pub struct SnapshotBuilder {
    handle: StateHandle,
    snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let started = Instant::now();
        // A copy, so apply (which takes the write lock on the Raft state machine's task)
        // waits only for the copy, not for encoding and writing megabytes. The state's maps
        // are persistent, so the copy shares them: microseconds at any size.
        let (meta, state, held) = {
            let applied = self.handle.read();
            let locked = Instant::now();
            // One log id names one state, so it names the snapshot too.
            let id = match &applied.last_applied {
                Some(l) => format!("{}-{}", l.leader_id.term, l.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            let state = applied.state.clone();
            // How long apply could have been kept waiting by this build.
            (meta, state, locked.elapsed())
        };
        let data = off_runtime(move || crate::codec::encode(&state).map_err(std::io::Error::other))
            .await
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let data = self.snapshots.persist(&meta, data).await?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            held_us = held.as_micros() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BerthNode>)> {
        let a = self.handle.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<CommandResult>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut events = Vec::new();
        {
            let mut guard = self.write();
            let applied = &mut *guard;
            for entry in entries {
                let index = entry.log_id.index;
                applied.last_applied = Some(entry.log_id);
                // One answer per entry, blank and membership entries included.
                match entry.payload {
                    EntryPayload::Blank => {
                        applied.state.advance(index);
                        results.push(Vec::new());
                    }
                    EntryPayload::Normal(batch) => {
                        results.push(applied.state.apply(index, &batch));
                    }
                    EntryPayload::Membership(m) => {
                        let voters = m.voter_ids().collect();
                        let learners = m.learner_ids().collect();
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        applied.state.note_membership(index, voters, learners);
                        results.push(Vec::new());
                    }
                }
                let changes = applied.state.take_changes();
                if !changes.is_empty() {
                    events.push(StateEvent::Applied {
                        revision: index,
                        changes: Arc::new(changes),
                    });
                }
            }
        }
        for ev in events {
            // No subscribers is fine: nobody is watching.
            let _ = self.handle.events.send(ev);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            handle: self.handle.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        self.installing.store(true, Ordering::Release);
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BerthNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        // Decoding megabytes is kept off the workers the Raft loop runs on.
        let (state, data) = off_runtime(move || {
            let mut state = crate::codec::decode(&data).map_err(std::io::Error::other)?;
            state.rebuild_indexes();
            Ok((state, data))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        // Durable first: if we crash after replacing memory but before this, a restart
        // would come back with a state older than what we told the leader we hold.
        let data = self.snapshots.persist(meta, data).await?;
        self.installing.store(false, Ordering::Release);
        let revision = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        {
            let mut a = self.write();
            a.state = state;
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        let _ = self.handle.events.send(StateEvent::Reset { revision });
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let snapshots = self.snapshots.clone();
        let stored = off_runtime(move || snapshots.read().map_err(std::io::Error::other))
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = temp_dir()?;
            let (log, sm) = open_at(dir.path())?;
            Ok((dir, log, sm))
        }
    }

    fn temp_dir() -> StorageResult<tempfile::TempDir> {
        tempfile::tempdir().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    /// Opens the store at `path`. A test that reopens a store in the same process can find
    /// the file lock still held for a moment: sled's own I/O threads keep the previous
    /// instance's file open until their last write ends (a restarted process never sees
    /// this; the kernel drops the lock with the process).
    fn open_at(path: &std::path::Path) -> StorageResult<(LogStore, StateMachine)> {
        let mut tries = 0;
        loop {
            match open(path) {
                Err(StoreError::Sled(sled::Error::Io(e)))
                    if e.kind() == std::io::ErrorKind::WouldBlock && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r.map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e)),
            }
        }
    }

    /// Entries 1..=10 in the log, 1..=5 applied and in a snapshot on disk.
    async fn log_to_10_snapshot_at_5(
        log: &mut LogStore,
        sm: &mut StateMachine,
    ) -> StorageResult<()> {
        use openraft::storage::RaftLogStorageExt;
        log.blocking_append((1..=10).map(blank)).await?;
        sm.apply((1..=5).map(blank)).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        Ok(())
    }

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Blank,
        }
    }

    /// Regression (chaos suite, seed 2026): a node killed after openraft purged its log for
    /// a snapshot from the leader, but before that snapshot was stored, could not start.
    #[tokio::test]
    async fn an_interrupted_snapshot_install_leaves_a_store_that_starts() -> StorageResult<()> {
        let dir = temp_dir()?;
        {
            let (mut log, mut sm) = open_at(dir.path())?;
            log_to_10_snapshot_at_5(&mut log, &mut sm).await?;
            log.save_committed(Some(log_id(10))).await?;
            // The leader's snapshot (at 12) starts arriving; openraft purges for it at once.
            let _receiving = sm.begin_receiving_snapshot().await?;
            log.purge(log_id(12)).await?;
            // …and the process dies before the state machine stored that snapshot.
        }
        let (mut log, mut sm) = open_at(dir.path())?;
        let state = log.get_log_state().await?;
        assert_eq!(
            state.last_purged_log_id,
            Some(log_id(5)),
            "purged past the stored snapshot"
        );
        assert_eq!(state.last_log_id, Some(log_id(10)));
        let (applied, _) = sm.applied_state().await?;
        assert_eq!(applied, Some(log_id(5)));
        let committed = log.read_committed().await?;
        assert!(committed <= state.last_log_id);
        // Everything openraft will re-apply on start is there.
        let replay = log
            .try_get_log_entries(6..=committed.map(|c| c.index).unwrap_or(5))
            .await?;
        assert_eq!(
            replay.len() as u64,
            committed.map(|c| c.index).unwrap_or(5) - 5
        );
        Ok(())
    }

    /// Regression (chaos suite, seed 2026, 30 minutes): a purge held back during a
    /// snapshot install left a hole between the old purge point and the installed snapshot;
    /// entries appended after the snapshot sat beyond the hole and the node could not start.
    #[tokio::test]
    async fn a_held_back_purge_leaves_no_hole_after_a_restart() -> StorageResult<()> {
        use openraft::storage::RaftLogStorageExt;
        let dir = temp_dir()?;
        {
            let (mut log, mut sm) = open_at(dir.path())?;
            log_to_10_snapshot_at_5(&mut log, &mut sm).await?;
            // The leader's snapshot at 20 arrives; openraft purges for it while it is stored.
            let receiving = sm.begin_receiving_snapshot().await?;
            log.purge(log_id(20)).await?;
            let leader_dir = temp_dir()?;
            let (_, mut leaders) = open_at(leader_dir.path())?;
            leaders.apply((1..=20).map(blank)).await?;
            let built = leaders
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await?;
            drop(receiving);
            sm.install_snapshot(&built.meta, built.snapshot).await?;
            // The leader goes on from 21.
            log.blocking_append((21..=25).map(blank)).await?;
            log.save_committed(Some(log_id(25))).await?;
        }
        let (mut log, mut sm) = open_at(dir.path())?;
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(log_id(20)));
        assert_eq!(state.last_log_id, Some(log_id(25)));
        // No hole: every index after the purge point up to the last entry is present.
        let present = log.try_get_log_entries(21..=25).await?;
        let indexes: Vec<u64> = present.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![21, 22, 23, 24, 25]);
        assert!(log.try_get_log_entries(..=20).await?.is_empty());
        let (applied, _) = sm.applied_state().await?;
        assert_eq!(applied, Some(log_id(20)));
        Ok(())
    }

    /// A snapshot built before an install but stored after it must not replace it.
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() -> StorageResult<()> {
        let dir = temp_dir()?;
        let (_log, sm) = open_at(dir.path())?;
        let meta = |i: u64| SnapshotMeta {
            last_log_id: Some(log_id(i)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{i}"),
        };
        let state = encode(&ClusterState::new())
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        sm.snapshots.persist(&meta(8), state.clone()).await?;
        sm.snapshots.persist(&meta(5), state).await?;
        assert_eq!(sm.snapshots.stored_log_id(), Some(log_id(8)));
        let on_disk = sm
            .snapshots
            .read()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        assert_eq!(on_disk.and_then(|(m, _)| m.last_log_id), Some(log_id(8)));
        Ok(())
    }

    /// A store written when snapshots lived in sled starts with the same state, and the
    /// snapshot now sits in the file.
    #[tokio::test]
    async fn a_snapshot_kept_in_sled_moves_to_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut state = ClusterState::new();
        state.advance(7);
        let meta = SnapshotMeta::<NodeId, BerthNode> {
            last_log_id: Some(log_id(7)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-7".into(),
        };
        {
            let db = sled::open(dir.path())?;
            let old = db.open_tree(OLD_SNAPSHOT_TREE)?;
            old.insert(OLD_KEY_SNAPSHOT_META, encode(&meta)?)?;
            old.insert(OLD_KEY_SNAPSHOT_DATA, encode(&state)?)?;
            db.flush()?;
        }
        let (log, mut sm) = open_at(dir.path())?;
        assert_eq!(sm.applied_state().await?.0, Some(log_id(7)));
        assert_eq!(sm.handle().read().state, state);
        let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
        assert_eq!(current.meta.last_log_id, Some(log_id(7)));
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        let trees = log.db.tree_names();
        assert!(!trees
            .iter()
            .any(|n| n.as_ref() == OLD_SNAPSHOT_TREE.as_bytes()));
        Ok(())
    }

    /// A crash while a snapshot file was being written leaves the temporary file behind;
    /// the store starts from the last complete snapshot.
    #[tokio::test]
    async fn a_half_written_snapshot_is_ignored() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut log, mut sm) = open_at(dir.path())?;
            log_to_10_snapshot_at_5(&mut log, &mut sm).await?;
        }
        std::fs::write(dir.path().join(SNAPSHOT_TMP), b"\0\0\0\0\0\0\x10\0{\"last")?;
        let (_log, mut sm) = open_at(dir.path())?;
        assert_eq!(sm.applied_state().await?.0, Some(log_id(5)));
        Ok(())
    }

    /// A damaged snapshot file stops the node with an error naming it, not a panic.
    #[test]
    fn a_truncated_snapshot_file_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path())?;
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            [0, 0, 0, 0, 0, 0, 1, 0, b'{'],
        )?;
        match open(dir.path()) {
            Err(e @ StoreError::SnapshotFile(_)) => {
                assert!(e.to_string().contains(SNAPSHOT_FILE), "{e}");
                Ok(())
            }
            Err(e) => Err(format!("wrong error: {e}").into()),
            Ok(_) => Err("a truncated snapshot file was accepted".into()),
        }
    }

    /// openraft's own storage conformance suite, against the real sled store on disk.
    #[test]
    fn openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(SledBuilder)?;
        Ok(())
    }
}
