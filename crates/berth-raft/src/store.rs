//! The sled-backed Raft store.
//!
//! One sled database per control node, three trees:
//! - `log`: entries keyed by big-endian index (so key order is index order);
//! - `meta`: vote, committed log id, last purged log id;
//! - `snapshot`: the latest snapshot's metadata and bytes.
//!
//! The state machine itself lives in memory ([`ClusterState`]) and is rebuilt on start from
//! the latest snapshot plus the committed log, which openraft re-applies. That keeps apply
//! fast and the durable part simple: the log is the truth, and nothing is acknowledged
//! before the log entries holding it are flushed (sled flushes all trees at once).

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

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
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

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
/// milliseconds and must not stall other tasks on the same worker.
async fn flush(db: &sled::Db) -> Result<(), std::io::Error> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// The last log id covered by the snapshot on disk, if there is one.
fn stored_snapshot_log_id(snap: &sled::Tree) -> StorageResult<Option<LogId<NodeId>>> {
    let raw = snap
        .get(KEY_SNAPSHOT_META)
        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
    let Some(raw) = raw else { return Ok(None) };
    let meta: SnapshotMeta<NodeId, BerthNode> =
        decode(&raw).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
    Ok(meta.last_log_id)
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
    snap: &sled::Tree,
) -> Result<(), StoreError> {
    let Some(covered) = stored_snapshot_log_id(snap)? else {
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
    let snap = db.open_tree("snapshot")?;
    cover_log_with_snapshot(&db, &log, &meta, &snap)?;
    let installing = Arc::new(AtomicBool::new(false));
    let sm = StateMachine::load(db.clone(), snap.clone(), installing.clone())?;
    Ok((
        LogStore {
            db,
            log,
            meta,
            snap,
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
    snap: sled::Tree,
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
        flush(&self.db)
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
        flush(&self.db)
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
        let res = flush(&self.db).await;
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
        flush(&self.db)
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
            match stored_snapshot_log_id(&self.snap)? {
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
        flush(&self.db)
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

/// Snapshot as persisted: openraft's metadata plus the serialised state.
pub struct StateMachine {
    handle: StateHandle,
    snapshots: SnapshotStore,
    /// Shared with the log store; see `LogStore::purge`.
    installing: Arc<AtomicBool>,
}

/// Where snapshots are kept, shared by the state machine (installs) and the builders.
#[derive(Clone)]
struct SnapshotStore {
    db: sled::Db,
    snap: sled::Tree,
    /// Installs and builds run on different tasks; one at a time decides what is stored.
    persist_lock: Arc<tokio::sync::Mutex<()>>,
}

impl StateMachine {
    fn load(
        db: sled::Db,
        snap: sled::Tree,
        installing: Arc<AtomicBool>,
    ) -> Result<Self, StoreError> {
        let mut applied = Applied::default();
        if let (Some(meta), Some(data)) =
            (snap.get(KEY_SNAPSHOT_META)?, snap.get(KEY_SNAPSHOT_DATA)?)
        {
            let meta: SnapshotMeta<NodeId, BerthNode> = decode(&meta)?;
            applied.state = decode(&data)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(StateMachine {
            handle: StateHandle {
                applied: Arc::new(RwLock::new(applied)),
                events,
            },
            snapshots: SnapshotStore {
                db,
                snap,
                persist_lock: Arc::default(),
            },
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
    async fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, BerthNode>,
        data: &[u8],
    ) -> StorageResult<()> {
        // A build that started before an install may finish after it; the older snapshot
        // must not replace the newer one (the log behind it may already be purged).
        let _one_at_a_time = self.persist_lock.lock().await;
        if stored_snapshot_log_id(&self.snap)? > meta.last_log_id {
            tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot is already stored; keeping it");
            return Ok(());
        }
        let sig = Some(meta.signature());
        let m = encode(meta)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)))?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, m);
        batch.insert(KEY_SNAPSHOT_DATA, data);
        self.snap
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)))?;
        flush(&self.db)
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, AnyError::new(&e)).into())
    }
}

/// Builds snapshots from the shared state.
pub struct SnapshotBuilder {
    handle: StateHandle,
    snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let applied = self.handle.read();
            let data = encode(&applied.state)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
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
            (meta, data)
        };
        self.snapshots.persist(&meta, &data).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot built");
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
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        applied.state.advance(index);
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
        let state: ClusterState = decode(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        // Durable first: if we crash after replacing memory but before this, a restart
        // would come back with a state older than what we told the leader we hold.
        self.snapshots.persist(meta, &data).await?;
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
        let read = |k| {
            self.snapshots
                .snap
                .get(k)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
        };
        let (Some(meta), Some(data)) = (read(KEY_SNAPSHOT_META)?, read(KEY_SNAPSHOT_DATA)?) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BerthNode> =
            decode(&meta).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
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
        sm.snapshots.persist(&meta(8), &state).await?;
        sm.snapshots.persist(&meta(5), &state).await?;
        assert_eq!(stored_snapshot_log_id(&sm.snapshots.snap)?, Some(log_id(8)));
        Ok(())
    }

    /// openraft's own storage conformance suite, against the real sled store on disk.
    #[test]
    fn openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(SledBuilder)?;
        Ok(())
    }
}
