//! A terminal's years in accelerated time (issue 15, point 11), with the real agent on a real
//! swtpm and a real collector. Every agent start is one simulated day: the collector's clock
//! (libfaketime, following a file) and the agent's (libfaketime, per start) move a day ahead.
//! Along the way: starts that end cleanly, SIGKILL at random moments of the traffic and during
//! start-up, device certificates of 30 days renewed by the agent itself, data-key rotations by an
//! admin logged in with TOTP, journal overflow cycles (1 MiB bound, collector down), collector
//! outages, restarts, a restore from an online backup, the agent's wall clock jumping 400 days
//! ahead and 400 days back, and POS traffic (sales, cache puts, clerk logins) at every start.
//!
//! At the end: every event the agent acknowledged is at the collector at its seq with its
//! content, or its seq is declared dropped by a signed `journal_overflow` record the collector
//! stored ("zero acknowledged events lost" in the presence of a declared overflow); every seq is
//! stored once and every missing seq lies in a declared range; the only alerts are the
//! `chain_gap`s the overflows cause (one at most per declared range); the agent's RSS stays within
//! its bound; `posguardctl verify-journal` passes. All findings are collected and reported
//! together, each naming what broke.
//!
//! Sizes (env): `POSGUARD_LIFETIME_STARTS` (default 1000), `POSGUARD_LIFETIME_EVENTS` (POS events
//! per start, default 8), `POSGUARD_LIFETIME_SEED`, `POSGUARD_LIFETIME_RSS_MIB` (the bound on
//! RSS of this build, default 24 as in docs/PERFORMANCE.md; see there for the debug build).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

// The crate root sits beside its modules, so they are named by path.
#[path = "lifetime/check.rs"]
mod check;
#[path = "lifetime/figures.rs"]
mod figures;
#[path = "lifetime/pos.rs"]
mod pos;
#[path = "lifetime/sim.rs"]
mod sim;
#[path = "lifetime/world.rs"]
mod world;

use sim::{Sim, Sizes};

#[test]
fn a_terminal_lives_its_years_without_losing_an_acknowledged_event() {
    let sizes = Sizes::from_env();
    eprintln!(
        "lifetime: {sizes:?} (replay with POSGUARD_LIFETIME_SEED={})",
        sizes.seed
    );
    let mut sim = Sim::new(&sizes);
    for i in 0..sizes.starts {
        sim.day(i);
    }
    let report = sim.finish();
    eprintln!("{}", report.figures);
    assert!(
        report.findings.is_empty(),
        "{} finding(s) after {} starts:\n- {}\nfigures: {}",
        report.findings.len(),
        sizes.starts,
        report.findings.join("\n- "),
        report.figures
    );
}
