//! Group sync: many writers, one `flush` + `fdatasync`.
//!
//! A writer calls [`GroupSync::sync`] after its write is in sled. A sync round that *starts*
//! after that covers the write. Rounds run one at a time; a writer arriving while a round runs
//! waits for it and then for the next one, which the first waiter to wake starts for everybody
//! who arrived meanwhile: under load, one fsync per round covers a whole crowd of writers.

use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds started so far.
    started: u64,
    /// The latest round finished (rounds finish in order).
    done: u64,
    /// A round is running.
    running: bool,
    /// The latest round that failed (0: none).
    failed: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct GroupSync {
    rounds: Mutex<Rounds>,
    finished: Condvar,
}

impl GroupSync {
    /// Returns once a round that started after this call has finished: `Ok` if it and every
    /// round since succeeded. `make_durable` is the round's work.
    pub(crate) fn sync<E>(
        &self,
        make_durable: impl Fn() -> Result<(), E>,
        on_error: impl Fn(E),
    ) -> Result<(), ()> {
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let target = r.started.saturating_add(1);
        while r.done < target {
            if r.running {
                r = self.finished.wait(r).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            r.running = true;
            r.started = r.started.saturating_add(1);
            let round = r.started;
            drop(r);
            let result = make_durable();
            r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = result {
                r.failed = round;
                on_error(e);
            }
            r.done = round;
            r.running = false;
            self.finished.notify_all();
        }
        if r.failed >= target { Err(()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_writers_share_rounds_and_see_failures() {
        let g = Arc::new(GroupSync::default());
        let rounds = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, rounds) = (g.clone(), rounds.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        g.sync(
                            || {
                                rounds.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(300));
                                Ok::<(), ()>(())
                            },
                            |_| {},
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = rounds.load(Ordering::SeqCst);
        assert!(n < 800, "{n} rounds for 800 syncs: nothing was shared");
        assert!(g.sync(|| Err::<(), _>("disk"), |_| {}).is_err());
        assert!(g.sync(|| Ok::<(), ()>(()), |_| {}).is_ok());
    }
}
