//! Argon2id work with bounded memory. Each check holds `auth.argon2.m_kib` of memory (19 MiB by
//! default) for tens of milliseconds; unbounded, 64 concurrent logins took the agent past 1 GB.
//! Here a fixed set of worker threads (`[auth.hashing] workers`) does every hash and check of a
//! secret — clerks' logins, the decoy for unknown clerks (so it costs the same wait), the
//! approver of an override, enrolment — taking jobs from a bounded [`FairQueue`] served
//! round-robin by client process. A job that finds the queue full is answered `busy`; a job
//! whose requester went away before its turn is dropped without hashing.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use posguard_proto::local_api::{ApiError, ErrorCode};
use tokio::sync::oneshot;

use super::fair_queue::{Admission, FairQueue, PeerKey};
use crate::auth::{HashParams, HashingLimits, Secret, SecretError, hash_secret, verify_secret};

/// One piece of Argon2id work.
enum Work {
    Verify {
        secret: Secret,
        phc: String,
    },
    Hash {
        secret: Secret,
        salt: [u8; 16],
        params: HashParams,
    },
}

enum Done {
    Verified(bool),
    Hashed(Result<String, SecretError>),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Done>,
}

struct State {
    queue: FairQueue<Job>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

/// The hashing workers; dropping the last handle stops them once the queue is empty.
#[derive(Clone)]
pub(crate) struct Hasher {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        drop(state);
        self.0.ready.notify_all();
    }
}

fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::Busy,
        "the agent is checking too many secrets at once; retry in a moment",
    )
}

fn gone() -> ApiError {
    tracing::error!("an Argon2id worker stopped");
    ApiError::new(ErrorCode::Internal, "internal error; see the agent's log")
}

impl Hasher {
    /// Starts `limits.workers` threads.
    pub(crate) fn start(limits: HashingLimits) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: FairQueue::new(limits.max_queued),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..limits.workers.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("posguard-argon2-{i}"))
                .spawn(move || work(&shared))?;
        }
        Ok(Hasher {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        })
    }

    async fn run(&self, peer: PeerKey, work: Work) -> Result<Done, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { work, reply };
        let admission = {
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if state.closed {
                return Err(gone());
            }
            state.queue.push(peer, job)
        };
        match admission {
            Admission::Queued => {}
            // The evicted job's requester sees its channel close: `busy`.
            Admission::QueuedEvicting(old) => drop(old),
            Admission::Refused(_) => return Err(busy()),
        }
        self.shared.ready.notify_one();
        answer.await.map_err(|_| busy())
    }

    /// Whether `secret` matches the stored PHC string (a malformed hash never matches).
    pub(crate) async fn verify(
        &self,
        peer: PeerKey,
        secret: Secret,
        phc: String,
    ) -> Result<bool, ApiError> {
        match self.run(peer, Work::Verify { secret, phc }).await? {
            Done::Verified(ok) => Ok(ok),
            Done::Hashed(_) => Err(gone()),
        }
    }

    /// A new PHC string for `secret`.
    pub(crate) async fn hash(
        &self,
        peer: PeerKey,
        secret: Secret,
        salt: [u8; 16],
        params: HashParams,
    ) -> Result<Result<String, SecretError>, ApiError> {
        match self
            .run(
                peer,
                Work::Hash {
                    secret,
                    salt,
                    params,
                },
            )
            .await?
        {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => Err(gone()),
        }
    }
}

/// A worker: takes the next job in turn, skips it if nobody waits for it any more.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = state.queue.pop() {
                    break job;
                }
                if state.closed {
                    return;
                }
                state = shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        if job.reply.is_closed() {
            continue; // the client hung up: no hash for nobody
        }
        let done = match job.work {
            Work::Verify { secret, phc } => {
                Done::Verified(verify_secret(&secret, &phc).unwrap_or(false))
            }
            Work::Hash {
                secret,
                salt,
                params,
            } => Done::Hashed(hash_secret(&secret, &salt, &params)),
        };
        let _ = job.reply.send(done);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_run_and_a_full_queue_answers_busy() {
        let params = HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let hasher = Hasher::start(HashingLimits {
            workers: 1,
            max_queued: 2,
        })
        .unwrap();
        let secret = Secret::new("4821".to_owned());
        let phc = hasher
            .hash((0, 1), secret.clone(), [3; 16], params)
            .await
            .unwrap()
            .unwrap();
        assert!(
            hasher
                .verify((0, 1), secret.clone(), phc.clone())
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify((0, 1), Secret::new("0000".to_owned()), phc.clone())
                .await
                .unwrap()
        );
        // Many at once from one process: some are refused `busy`, none is lost, the queue never
        // grows past its bound; another process still gets its turn.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (h, s, p) = (hasher.clone(), secret.clone(), phc.clone());
            tasks.push(tokio::spawn(async move { h.verify((0, 1), s, p).await }));
        }
        let till = hasher.verify((0, 2), secret.clone(), phc.clone()).await;
        assert!(till.unwrap(), "the other process is admitted and served");
        let mut served = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(true) => served += 1,
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::Busy);
                    refused += 1;
                }
                Ok(false) => panic!("a right secret was refused"),
            }
        }
        assert_eq!(served + refused, 50);
        assert!(served > 0);
    }
}
