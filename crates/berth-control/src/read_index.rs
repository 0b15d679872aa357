//! Linearizable reads on the leader share leadership confirmations.
//!
//! openraft confirms leadership for a read by sending a round of AppendEntries to every
//! voter, one round per call, each with a fresh client. A fleet of agents opening their
//! assignment streams (each behind a read barrier), or many List calls, made one round
//! each: thousands of RPCs a second, competing with replication itself until its
//! 100 ms timeouts expired and the leader lost its majority's acknowledgements.
//!
//! Here a read waits for the next round that starts after it arrived, and every read
//! waiting when a round starts shares it. A read is still linearizable: the leadership it
//! relies on was confirmed after it began, at an index no older than any write it could
//! have seen. One round is in flight at a time, so a burst of N reads costs at most two.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// A confirmation: the index a read must see applied, or why leadership was not
/// confirmed.
pub type RoundResult = Result<u64, String>;
type RoundFuture = Pin<Box<dyn Future<Output = RoundResult> + Send>>;
type Round = Arc<dyn Fn() -> RoundFuture + Send + Sync>;

/// A round that neither answers nor fails (a core that stopped answering) must not hold
/// every later read: its readers are failed and the next round starts.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ReadIndex {
    round: Round,
    waiting: Mutex<Waiting>,
    rounds: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    readers: Vec<oneshot::Sender<RoundResult>>,
    /// A driver task is running rounds; readers only queue.
    driving: bool,
}

impl ReadIndex {
    /// Confirmations made by `round`, shared between the reads waiting when it starts.
    pub fn new<F, Fut>(round: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RoundResult> + Send + 'static,
    {
        ReadIndex {
            round: Arc::new(move || Box::pin(round())),
            waiting: Mutex::new(Waiting::default()),
            rounds: AtomicU64::new(0),
        }
    }

    /// The read index of a round that started after this call.
    pub async fn read_index(self: &Arc<Self>) -> RoundResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = self.lock();
            w.readers.push(tx);
            !std::mem::replace(&mut w.driving, true)
        };
        if start {
            // Spawned, not run by this reader: a reader whose caller gives up must not
            // strand the others queued behind its round.
            tokio::spawn(self.clone().drive());
        }
        rx.await
            .unwrap_or_else(|_| Err("the read-index round was dropped (shutting down?)".into()))
    }

    /// Rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    async fn drive(self: Arc<Self>) {
        loop {
            let readers = {
                let mut w = self.lock();
                if w.readers.is_empty() {
                    w.driving = false;
                    return;
                }
                std::mem::take(&mut w.readers)
            };
            self.rounds.fetch_add(1, Ordering::Relaxed);
            let result = tokio::time::timeout(ROUND_TIMEOUT, (self.round)())
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "leadership was not confirmed within {ROUND_TIMEOUT:?}"
                    ))
                });
            for r in readers {
                // A reader that gave up has dropped its end; nothing to tell it.
                let _ = r.send(result.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Every change under the lock is a push or a take: consistent whatever a panicking
        // holder did.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, Semaphore};

    #[tokio::test]
    async fn a_burst_of_reads_shares_at_most_two_rounds() {
        let started = Arc::new(AtomicU64::new(0));
        let s = started.clone();
        let ri = Arc::new(ReadIndex::new(move || {
            let n = s.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(n * 100)
            }
        }));
        let reads: Vec<_> = (0..500)
            .map(|_| {
                let ri = ri.clone();
                tokio::spawn(async move { ri.read_index().await })
            })
            .collect();
        for r in reads {
            let index = r.await.unwrap().unwrap();
            assert!(index == 100 || index == 200, "{index}");
        }
        assert!(ri.rounds() <= 2, "{} rounds for 500 reads", ri.rounds());
        assert_eq!(ri.rounds(), started.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_read_that_arrives_during_a_round_waits_for_the_next_one() {
        // Each round reports that it started, then waits to be let go.
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<u64>();
        let gate = Arc::new(Semaphore::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let (g, c) = (gate.clone(), count.clone());
        let ri = Arc::new(ReadIndex::new(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let (g, tx) = (g.clone(), started_tx.clone());
            async move {
                let _ = tx.send(n);
                g.acquire().await.expect("gate open").forget();
                Ok(n)
            }
        }));
        let first = tokio::spawn({
            let ri = ri.clone();
            async move { ri.read_index().await }
        });
        assert_eq!(started_rx.recv().await, Some(1));
        // Round 1 is under way: this read began after it and must not take its answer.
        let second = tokio::spawn({
            let ri = ri.clone();
            async move { ri.read_index().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(started_rx.recv().await, Some(2));
        gate.add_permits(1);
        assert_eq!(second.await.unwrap(), Ok(2));
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_readers_and_the_next_read_starts_afresh() {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let ri = Arc::new(ReadIndex::new(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("not the leader".to_string())
                } else {
                    Ok(7)
                }
            }
        }));
        assert_eq!(ri.read_index().await, Err("not the leader".to_string()));
        assert_eq!(ri.read_index().await, Ok(7));
    }
}
