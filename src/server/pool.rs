//! Where heavy scoring runs: a bounded pool of blocking threads, so a client looping huge
//! batches cannot hold the runtime's request threads (which every other caller's requests,
//! health checks and the registry poller need) for the length of its batch. Work is handed
//! over in chunks; between chunks a request whose deadline passed, or whose client went away
//! (its future dropped), stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;

/// Items and transactions handed to the pool at a time: small enough that a cancelled
/// request stops within milliseconds, large enough that the hand-over costs nothing.
pub const CHUNK_ITEMS: usize = 256;
pub const CHUNK_TRANSACTIONS: usize = 20_000;

/// The nice value of the scoring threads (request threads run at 0). When the machine is
/// busy the kernel then runs a waiting Score, a health check or the registry poller before
/// more batch work: measured beside two clients looping 16 MB batches, a victim's p99.9 went
/// from 84-113 ms to 8-26 ms (BENCHMARKS.md, "Hostile load").
pub const SCORING_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Threads of their own (not tokio's blocking pool, which file IO and model loads share),
/// at [`SCORING_NICE`], taking chunks from one queue in arrival order.
#[derive(Clone)]
pub struct ScoringPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl ScoringPool {
    /// `threads` scoring threads (0: one per core). They end when the last clone of the
    /// pool is dropped.
    pub fn new(threads: usize) -> Self {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("scoring-{i}"))
                .spawn(move || {
                    lower_priority(SCORING_NICE);
                    // The lock is held only while taking the next job.
                    while let Some(job) = rx.lock().ok().and_then(|r| r.recv().ok()) {
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a scoring thread");
            }
        }
        ScoringPool { jobs: tx }
    }

    /// Runs `f` on a scoring thread. A request that went away before its turn (its future
    /// dropped) costs nothing: the job sees nobody waits and skips the work.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tonic::Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return;
            }
            // A panic fails this request (its sender is dropped), not the thread.
            if let Ok(out) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(out);
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| tonic::Status::unavailable("the scoring pool is shut down"))?;
        rx.await
            .map_err(|_| tonic::Status::internal("scoring failed (see the server log)"))
    }
}

/// Lowers the calling thread's priority to `nice` (Linux: the nice value is per thread).
/// Raising a nice value needs no privilege; a failure leaves the thread as it was.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if r != 0 {
        tracing::warn!(nice, "cannot lower the scoring threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// The deadline the client sent (`grpc-timeout`), as an instant from `start`.
pub fn deadline(metadata: &MetadataMap, start: Instant) -> Option<Instant> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    start.checked_add(d)
}

/// Whether a request that went away unanswered gave up for its deadline: past half of its
/// timeout. The client's clock starts before it has sent the request (a 57 MB batch was
/// dropped 108 ms before the deadline the server counted from its headers), and gRPC
/// clients reset a stream when their deadline passes.
pub fn gave_up(start: Instant, deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| {
        let timeout = d.saturating_duration_since(start);
        Instant::now() + timeout / 2 >= d
    })
}

/// The code of a request that went away unanswered: DEADLINE_EXCEEDED when it
/// [`gave_up`] for its deadline, else CANCELLED.
pub fn unanswered(start: Instant, deadline: Option<Instant>) -> tonic::Code {
    if gave_up(start, deadline) {
        tonic::Code::DeadlineExceeded
    } else {
        tonic::Code::Cancelled
    }
}

/// A slot for a Score, BatchScore or ModelInfer in progress, or RESOURCE_EXHAUSTED at once:
/// past the limit, load is shed rather than queued without bound.
pub fn slot(
    in_flight: &Arc<Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, tonic::Status> {
    in_flight.clone().try_acquire_owned().map_err(|_| {
        tonic::Status::resource_exhausted(
            "the server is at its limit of requests in progress (--max-concurrent-requests); retry after a short backoff",
        )
    })
}

/// Splits work into chunks of at most [`CHUNK_ITEMS`] items and about
/// [`CHUNK_TRANSACTIONS`] transactions (`cost` gives an item's).
pub fn chunks<T>(items: Vec<T>, cost: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_cost = 0;
    for it in items {
        let c = cost(&it);
        if !cur.is_empty() && (cur.len() >= CHUNK_ITEMS || cur_cost + c > CHUNK_TRANSACTIONS) {
            out.push(std::mem::take(&mut cur));
            cur_cost = 0;
        }
        cur_cost += c;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_and_chunks() {
        let start = Instant::now();
        let mut m = MetadataMap::new();
        assert_eq!(deadline(&m, start), None);
        m.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(
            deadline(&m, start),
            Some(start + Duration::from_millis(100))
        );
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(deadline(&m, start), Some(start + Duration::from_secs(2)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(deadline(&m, start), None);

        let c = chunks((0..600).collect(), |_| 1);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [256, 256, 88]);
        // A costly item closes the chunk before it; one alone is still a chunk.
        let c = chunks(vec![15_000, 10_000, 30_000, 1], |&c| c);
        assert_eq!(c, vec![vec![15_000], vec![10_000], vec![30_000], vec![1]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_runs_at_most_its_threads_at_once() {
        let pool = ScoringPool::new(2);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// The thread's nice value, field 19 of /proc/thread-self/stat (after the command name,
    /// which may hold spaces, in parentheses).
    #[cfg(target_os = "linux")]
    fn nice_here() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn scoring_runs_below_the_request_threads_priority() {
        let pool = ScoringPool::new(1);
        let base = nice_here();
        let there = pool.run(nice_here).await.unwrap();
        assert_eq!(there, (base + SCORING_NICE).min(19));
    }

    #[tokio::test]
    async fn a_panic_fails_its_request_only_and_a_dropped_one_is_skipped() {
        let pool = ScoringPool::new(1);
        let err = pool.run(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);

        // A job queued behind a slow one, whose request goes away before its turn.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(100)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r = ran.clone();
        let gone = pool.run(move || r.store(true, std::sync::atomic::Ordering::SeqCst));
        let _ = tokio::time::timeout(Duration::from_millis(10), gone).await;
        slow.await.unwrap().unwrap();
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
