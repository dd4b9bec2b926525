//! The waiting room of the Argon2id workers: a bounded queue served round-robin by client
//! process, so that one process flooding logins cannot starve another (the till's real clerk).
//!
//! Pure logic, no threads: [`super::hasher`] wraps it in a mutex. When the queue is full, a
//! newcomer from a process with fewer waiting jobs than the busiest process takes the place of
//! that process's newest job (which is refused `busy`); a newcomer from the busiest process is
//! itself refused. So a process with one login waiting is always admitted, and it waits at most
//! one turn per other waiting process.

use std::collections::VecDeque;

/// Who a job belongs to: the client process (uid and pid from SO_PEERCRED).
pub(crate) type PeerKey = (u32, u32);

/// What [`FairQueue::push`] did.
#[derive(Debug)]
pub(crate) enum Admission<T> {
    /// Queued.
    Queued,
    /// Queued, in place of this job of the busiest process, which must be refused.
    QueuedEvicting(T),
    /// Not queued: the queue is full and this process holds the most places.
    Refused(T),
}

/// A bounded queue with one FIFO per process, served round-robin.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    /// Processes with waiting jobs, in serving order; each with its jobs in arrival order.
    peers: VecDeque<(PeerKey, VecDeque<T>)>,
    len: usize,
    capacity: usize,
}

impl<T> FairQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        FairQueue {
            peers: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn waiting(&self, peer: PeerKey) -> usize {
        self.peers
            .iter()
            .find(|(k, _)| *k == peer)
            .map_or(0, |(_, jobs)| jobs.len())
    }

    /// Queues `job` for `peer`, or says whose job gives way.
    pub(crate) fn push(&mut self, peer: PeerKey, job: T) -> Admission<T> {
        let mut evicted = None;
        if self.len >= self.capacity {
            let mine = self.waiting(peer);
            let busiest = self
                .peers
                .iter_mut()
                .max_by_key(|(_, jobs)| jobs.len())
                .filter(|(_, jobs)| jobs.len() > mine.saturating_add(1));
            match busiest.and_then(|(_, jobs)| jobs.pop_back()) {
                Some(old) => {
                    self.len = self.len.saturating_sub(1);
                    evicted = Some(old);
                }
                None => return Admission::Refused(job),
            }
            self.peers.retain(|(_, jobs)| !jobs.is_empty());
        }
        match self.peers.iter_mut().find(|(k, _)| *k == peer) {
            Some((_, jobs)) => jobs.push_back(job),
            None => self.peers.push_back((peer, VecDeque::from([job]))),
        }
        self.len = self.len.saturating_add(1);
        match evicted {
            Some(old) => Admission::QueuedEvicting(old),
            None => Admission::Queued,
        }
    }

    /// The next job: the oldest of the process whose turn it is; that process goes to the back.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let (peer, mut jobs) = self.peers.pop_front()?;
        let job = jobs.pop_front();
        if !jobs.is_empty() {
            self.peers.push_back((peer, jobs));
        }
        if job.is_some() {
            self.len = self.len.saturating_sub(1);
        }
        job
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FLOOD: PeerKey = (0, 100);
    const TILL: PeerKey = (0, 200);

    #[test]
    fn processes_are_served_in_turn() {
        let mut q = FairQueue::new(16);
        for i in 0..5 {
            assert!(matches!(q.push(FLOOD, i), Admission::Queued));
        }
        assert!(matches!(q.push(TILL, 100), Admission::Queued));
        // The till's one job comes second, not after the five flood jobs.
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), Some(100));
        assert_eq!(
            (1..5).map(|_| q.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_full_queue_refuses_the_flood_and_admits_the_till() {
        let mut q = FairQueue::new(4);
        for i in 0..4 {
            assert!(matches!(q.push(FLOOD, i), Admission::Queued));
        }
        assert!(matches!(q.push(FLOOD, 9), Admission::Refused(9)));
        // The till takes the place of the flood's newest job.
        assert!(matches!(q.push(TILL, 100), Admission::QueuedEvicting(3)));
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), Some(100));
        // Two processes holding the places evenly: a third one's newcomer is refused only
        // when it would hold as many as the busiest.
        let mut q = FairQueue::new(2);
        assert!(matches!(q.push(FLOOD, 1), Admission::Queued));
        assert!(matches!(q.push(TILL, 2), Admission::Queued));
        assert!(matches!(q.push((0, 300), 3), Admission::Refused(3)));
    }

    #[test]
    fn the_bound_holds_under_any_sequence() {
        let mut q = FairQueue::new(8);
        let mut admitted = 0u32;
        for i in 0..10_000u32 {
            let peer = (0, i % 7 + u32::from(i % 3 == 0) * 50);
            match q.push(peer, i) {
                Admission::Queued | Admission::QueuedEvicting(_) => admitted += 1,
                Admission::Refused(_) => {}
            }
            assert!(q.len() <= 8);
            if i % 5 == 0 {
                q.pop();
            }
        }
        assert!(admitted > 2_000);
    }
}
