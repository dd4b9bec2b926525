//! Login throttling as pure state: per clerk ([`ClerkThrottle`]) and per terminal
//! ([`TerminalBudget`]). The I/O layer persists both (postcard or JSON in sled).
//!
//! Time is the boot clock (CLOCK_BOOTTIME) in nanoseconds, passed in. The boot clock starts over
//! at every boot, so stored deadlines mean nothing after one: at start the caller calls
//! `rebase(now_mono)` on every stored state. **A restart never shortens a lockout**: the
//! remaining time as of the last update (`updated_mono`) is kept in full from the restart on
//! (time the terminal spent off does not count), and when it is unknown the whole lockout starts
//! over. The wall clock never unlocks anyone: it can be set forward. Only
//! [`ClerkThrottle::admin_reset`] and [`TerminalBudget::admin_reset`] end a block early.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{ThrottlePolicy, secs_ns};

/// A running block (delay, lockout or terminal block) on the boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Boot-clock time (ns) the block ends.
    pub until_mono: u64,
    /// Its full length in ns, used when the remaining time is unknown after a restart.
    pub length_ns: u64,
}

impl Block {
    fn starting(now_mono: u64, length_ns: u64) -> Self {
        Block {
            until_mono: now_mono.saturating_add(length_ns),
            length_ns,
        }
    }

    /// Time left at `now_mono`; zero once over.
    pub fn remaining(&self, now_mono: u64) -> Duration {
        Duration::from_nanos(self.until_mono.saturating_sub(now_mono))
    }

    fn active(&self, now_mono: u64) -> bool {
        now_mono < self.until_mono
    }

    /// Moves the block onto a new boot clock; see the module docs for the rule.
    fn rebase(&mut self, updated_mono: Option<u64>, now_mono: u64) {
        let remaining = match updated_mono {
            Some(updated) => self.until_mono.saturating_sub(updated),
            None => self.length_ns,
        };
        self.until_mono = now_mono.saturating_add(remaining);
    }
}

/// Where a clerk stands before an attempt is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The attempt may be considered.
    Open,
    /// A progressive delay is running.
    Delayed {
        /// Until it ends.
        retry_after: Duration,
    },
    /// The clerk is locked out.
    Locked {
        /// Until it ends (unless an admin resets it first).
        remaining: Duration,
    },
}

/// What one more failure did to a clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; no delay yet.
    Counted {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// A progressive delay started.
    Delayed {
        /// Consecutive failures so far.
        failures: u32,
        /// The delay.
        delay: Duration,
    },
    /// The clerk is now locked out.
    LockedOut {
        /// Consecutive failures that caused it.
        failures: u32,
        /// Length of the lockout.
        duration: Duration,
    },
}

/// One clerk's failure tally, delay and lockout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClerkThrottle {
    /// Failures since the last successful login (or lockout end, or admin reset).
    pub consecutive_failures: u32,
    /// The running progressive delay.
    pub delay: Option<Block>,
    /// The running lockout.
    pub lockout: Option<Block>,
    /// Boot-clock time of the last update; `None` when never updated on this boot clock.
    pub updated_mono: Option<u64>,
}

impl ClerkThrottle {
    /// Ends blocks that are over; a lockout that ran out leaves a fresh tally (PCI DSS 8.3.4).
    pub fn refresh(&mut self, now_mono: u64) {
        if self.delay.is_some_and(|b| !b.active(now_mono)) {
            self.delay = None;
        }
        if self.lockout.is_some_and(|b| !b.active(now_mono)) {
            self.lockout = None;
            self.consecutive_failures = 0;
        }
        self.touch(now_mono);
    }

    fn touch(&mut self, now_mono: u64) {
        self.updated_mono = Some(self.updated_mono.map_or(now_mono, |u| u.max(now_mono)));
    }

    /// Whether an attempt at `now_mono` may be considered (call [`Self::refresh`] first).
    pub fn gate(&self, now_mono: u64) -> Gate {
        if let Some(b) = self.lockout.filter(|b| b.active(now_mono)) {
            return Gate::Locked {
                remaining: b.remaining(now_mono),
            };
        }
        if let Some(b) = self.delay.filter(|b| b.active(now_mono)) {
            return Gate::Delayed {
                retry_after: b.remaining(now_mono),
            };
        }
        Gate::Open
    }

    /// Counts a failed attempt (wrong secret, wrong or replayed TOTP code).
    pub fn record_failure(&mut self, policy: &ThrottlePolicy, now_mono: u64) -> FailureOutcome {
        self.refresh(now_mono);
        let failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_failures = failures;
        if failures >= policy.lockout_failures {
            let lockout = Block::starting(now_mono, policy.lockout_ns());
            // A lockout never replaces a longer one.
            if self
                .lockout
                .is_none_or(|old| old.until_mono < lockout.until_mono)
            {
                self.lockout = Some(lockout);
            }
            self.delay = None;
            return FailureOutcome::LockedOut {
                failures,
                duration: Duration::from_nanos(policy.lockout_ns()),
            };
        }
        let delay = policy.delay_after(failures);
        if delay.is_zero() {
            return FailureOutcome::Counted { failures };
        }
        let secs = delay.as_secs();
        self.delay = Some(Block::starting(now_mono, secs_ns(secs)));
        FailureOutcome::Delayed { failures, delay }
    }

    /// A successful login: the tally starts over. A lockout is never ended here.
    pub fn record_success(&mut self, now_mono: u64) {
        self.refresh(now_mono);
        if self.lockout.is_none() {
            self.consecutive_failures = 0;
            self.delay = None;
        }
    }

    /// An admin's explicit reset: the only way to end a lockout early.
    pub fn admin_reset(&mut self, now_mono: u64) {
        *self = ClerkThrottle::default();
        self.touch(now_mono);
    }

    /// Moves stored deadlines onto the boot clock after a restart (see the module docs).
    pub fn rebase(&mut self, now_mono: u64) {
        let updated = self.updated_mono;
        if let Some(b) = self.lockout.as_mut() {
            b.rebase(updated, now_mono);
        }
        if let Some(b) = self.delay.as_mut() {
            b.rebase(updated, now_mono);
        }
        self.updated_mono = Some(now_mono);
    }
}

/// The terminal-wide block that started when the failure budget was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// Failures counted in the window.
    pub failures: u32,
    /// The window.
    pub window: Duration,
    /// How long every login is now blocked.
    pub block: Duration,
}

/// Failures of all clerks on this terminal in a sliding window, and the block once too many.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalBudget {
    /// Boot-clock times (ns) of the failures still in the window, oldest first.
    pub failures_mono: Vec<u64>,
    /// The running terminal-wide block.
    pub block: Option<Block>,
    /// Boot-clock time of the last update; `None` when never updated on this boot clock.
    pub updated_mono: Option<u64>,
}

impl TerminalBudget {
    /// Forgets failures that left the window and ends a block that is over.
    pub fn refresh(&mut self, policy: &ThrottlePolicy, now_mono: u64) {
        let window = secs_ns(policy.budget_window_secs);
        self.failures_mono
            .retain(|t| t.saturating_add(window) > now_mono);
        if self.block.is_some_and(|b| !b.active(now_mono)) {
            self.block = None;
        }
        self.updated_mono = Some(self.updated_mono.map_or(now_mono, |u| u.max(now_mono)));
    }

    /// Time left of the terminal block at `now_mono`, if one runs.
    pub fn blocked(&self, now_mono: u64) -> Option<Duration> {
        self.block
            .filter(|b| b.active(now_mono))
            .map(|b| b.remaining(now_mono))
    }

    /// Counts a failure of any clerk; returns the block when this one exceeded the budget.
    pub fn record_failure(
        &mut self,
        policy: &ThrottlePolicy,
        now_mono: u64,
    ) -> Option<BudgetExceeded> {
        self.refresh(policy, now_mono);
        self.failures_mono.push(now_mono);
        let limit = usize::try_from(policy.budget_failures).unwrap_or(usize::MAX);
        let excess = self
            .failures_mono
            .len()
            .saturating_sub(limit.saturating_add(1));
        self.failures_mono.drain(..excess);
        if self.failures_mono.len() <= limit || self.block.is_some() {
            return None;
        }
        let failures = u32::try_from(self.failures_mono.len()).unwrap_or(u32::MAX);
        self.block = Some(Block::starting(now_mono, policy.budget_block_ns()));
        // The tally starts over when the block ends.
        self.failures_mono.clear();
        Some(BudgetExceeded {
            failures,
            window: Duration::from_secs(policy.budget_window_secs),
            block: Duration::from_nanos(policy.budget_block_ns()),
        })
    }

    /// An admin's explicit reset of the terminal block and tally.
    pub fn admin_reset(&mut self, now_mono: u64) {
        *self = TerminalBudget::default();
        self.updated_mono = Some(now_mono);
    }

    /// Moves stored times onto the boot clock after a restart (see the module docs); failures
    /// keep their age, or count as new when their age is unknown.
    pub fn rebase(&mut self, now_mono: u64) {
        let updated = self.updated_mono;
        for t in &mut self.failures_mono {
            let age = updated.map_or(0, |u| u.saturating_sub(*t));
            *t = now_mono.saturating_sub(age);
        }
        if let Some(b) = self.block.as_mut() {
            b.rebase(updated, now_mono);
        }
        self.updated_mono = Some(now_mono);
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
