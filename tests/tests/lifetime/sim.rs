//! The scenario: one call of [`Sim::day`] per agent start, then [`Sim::finish`]. What happens
//! on a day depends on its number within a period of `period` days (outages, restarts, clock
//! jumps, overflow cycles, rotations) and on a seeded random draw (how the start ends).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use posguard_e2e::free_port;
use posguard_e2e::lifetime::{
    Acked, AgentRun, Pki, SimCollector, agent_env, call, pos_traffic, proc_status_kib, real_now,
};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

pub const DEVICE: &str = "term-lifetime";
pub const DAY: i64 = 86_400;
/// How far the terminal's clock jumps (both ways) on the days it is wrong.
pub const JUMP: i64 = 400 * DAY;
const CERT_DAYS: i64 = 30;

#[derive(Debug, Clone)]
pub struct Sizes {
    pub starts: u64,
    pub events: u64,
    pub seed: u64,
    pub rss_bound_kib: u64,
    /// Days of one incident cycle (outage, overflow, restart, clock jumps).
    pub period: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// The agent's RSS bound: 24 MiB for the optimised daemon (docs/PERFORMANCE.md, "Memory");
/// a debug build maps a 160 MB binary and keeps more on the heap (52-56 MiB measured at the end
/// of a CI run, 18 MiB optimised), so CI, which runs those, checks a looser bound that still
/// catches growth over the run.
fn default_rss_mib() -> u64 {
    if std::env::var_os("POSGUARD_E2E_BIN_DIR").is_some() || !cfg!(debug_assertions) {
        24
    } else {
        80
    }
}

impl Sizes {
    pub fn from_env() -> Self {
        // 200 in CI: the debug binaries CI runs take 1-3 s a day on 2 shared cores (the
        // optimised ones 0.3-0.45 s); two 100-day cycles hold every incident of the scenario.
        // scripts/soak-lifetime.sh runs thousands (docs/PERFORMANCE.md, "Field lifetime").
        let starts = env_u64("POSGUARD_LIFETIME_STARTS", 200);
        assert!(starts >= 100, "POSGUARD_LIFETIME_STARTS: at least 100");
        Sizes {
            starts,
            events: env_u64("POSGUARD_LIFETIME_EVENTS", 8).max(2),
            seed: env_u64(
                "POSGUARD_LIFETIME_SEED",
                u64::try_from(real_now()).unwrap_or(1) | 1,
            ),
            rss_bound_kib: env_u64("POSGUARD_LIFETIME_RSS_MIB", default_rss_mib()) * 1024,
            period: 100,
        }
    }
}

/// How a start ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Clean,
    KillDuringStartUp,
    KillDuringTraffic,
}

/// What one run found and measured.
pub struct Report {
    pub findings: Vec<String>,
    pub figures: String,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub clean: u64,
    pub failed_starts: u64,
    pub failed_stops: u64,
    /// Stops that ended in SIGABRT (glibc's heap checks) or SIGSEGV under the libfaketime
    /// preload.
    pub aborted_stops: u64,
    pub killed_start_up: u64,
    pub killed_traffic: u64,
    pub outages: u64,
    pub restarts: u64,
    pub restores: u64,
    pub overflow_bursts: u64,
    pub rotations: u64,
    pub renewals: u64,
    pub clerk_logins: u64,
    pub cache_puts: u64,
    pub jumps: u64,
    pub start_ms: Vec<u64>,
    /// (day, VmRSS, RssAnon) samples, KiB.
    pub rss: Vec<(u64, u64, u64)>,
    /// The highest VmHWM (peak RSS) seen, KiB.
    pub hwm_kib: u64,
}

pub struct Sim {
    pub sizes: Sizes,
    pub rng: u64,
    pub pki: Pki,
    pub collector: SimCollector,
    pub time_file: PathBuf,
    pub tpm: Swtpm,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub journal: PathBuf,
    /// Seconds the simulated world is ahead of the host's clock.
    pub sim_offset: i64,
    pub admin_totp: Option<String>,
    pub acked: Vec<Acked>,
    pub findings: Vec<String>,
    /// (finding, first day, days) of the findings made along the way.
    pub daily: Vec<(String, u64, u64)>,
    pub counts: Counts,
    pub backup: Option<PathBuf>,
    pub began: Instant,
    /// The previous day ended with a kill: this start's journal has an unanchored tail.
    pub last_killed: bool,
}

impl Sim {
    pub fn new(sizes: &Sizes) -> Self {
        let pki = Pki::new();
        let port = free_port();
        let time_file = pki.path("collector-time");
        std::fs::write(&time_file, "+0\n").unwrap();
        let config = pki.path("collector.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\n\
                 fleet_ca = \"{}\"\nstore = \"{}\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\
                 device_cert_days = {CERT_DAYS}\nsilent_after_s = {}\n\
                 [rate_limit]\nper_second = 1000.0\nburst = 1000\n[alerts]\ncert_expiry_days = 3\n",
                pki.path("server.pem").display(),
                pki.path("server.key").display(),
                pki.path("fleet-ca.pem").display(),
                pki.path("collector.db").display(),
                pki.path("fleet-ca.pem").display(),
                pki.path("fleet-ca.key").display(),
                // Outages last days of simulated time; a terminal silent for 30 days would
                // be an alert the scenario did not mean to cause.
                30 * DAY,
            ),
        )
        .unwrap();
        let mut collector = SimCollector::new(&config, port, &time_file);
        collector.start();

        let tpm = Swtpm::start().unwrap();
        let se = posguard_hal::open(&tpm.config()).unwrap();
        se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("device.pem");
        pki.device_cert(se, DEVICE, real_now() - 300, CERT_DAYS, &cert);
        let socket = dir.path().join("agent.sock");
        let journal = dir.path().join("journal");
        let agent_config = dir.path().join("agent.toml");
        std::fs::write(
            &agent_config,
            format!(
                "[device]\nid = \"{DEVICE}\"\n[secure_element]\ntcti = \"{}\"\n[journal]\n\
                 dir = \"{}\"\nmax_bytes = 1048576\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\
                 [uplink]\ncollector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\
                 fleet_ca = \"{}\"\ncertificate = \"{}\"\nheartbeat_secs = 1\nbackoff_max_secs = 1\n",
                tpm.tcti(),
                journal.display(),
                dir.path().join("state").display(),
                socket.display(),
                pki.path("fleet-ca.pem").display(),
                cert.display(),
            ),
        )
        .unwrap();
        Sim {
            sizes: sizes.clone(),
            rng: sizes.seed,
            pki,
            collector,
            time_file,
            tpm,
            config: agent_config,
            socket,
            journal,
            dir,
            sim_offset: 0,
            admin_totp: None,
            acked: Vec::new(),
            findings: Vec::new(),
            daily: Vec::new(),
            counts: Counts::default(),
            backup: None,
            began: Instant::now(),
            last_killed: false,
        }
    }

    pub fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A finding of day `day`. The same one on many days is reported once, with its first day
    /// and how often: a crash loop of 500 days is one finding.
    pub(crate) fn finding(&mut self, day: u64, what: String) {
        match self.daily.iter_mut().find(|(w, _, _)| *w == what) {
            Some((_, _, n)) => *n += 1,
            None => self.daily.push((what, day, 1)),
        }
    }

    /// The day findings, in the order they first happened.
    pub fn day_findings(&self) -> Vec<String> {
        self.daily
            .iter()
            .map(|(what, day, n)| match n {
                1 => format!("day {day}: {what}"),
                n => format!("from day {day}, on {n} days: {what}"),
            })
            .collect()
    }

    /// One agent start: a simulated day.
    pub fn day(&mut self, i: u64) {
        self.advance();
        self.collector_events(i);
        let offset = self.agent_offset(i);
        let burst = self.burst_day(i);
        let ending = match (i, self.next() % 100) {
            // The first day enrolls the clerks; a burst day fills the journal.
            (0, _) => Ending::Clean,
            _ if burst => Ending::Clean,
            (_, 0..10) => Ending::KillDuringStartUp,
            (_, 10..40) => Ending::KillDuringTraffic,
            _ => Ending::Clean,
        };
        let previous_killed = std::mem::replace(&mut self.last_killed, ending != Ending::Clean);
        let mut agent = AgentRun::spawn(&self.config, &agent_env(offset));
        if ending == Ending::KillDuringStartUp {
            // The kill moment is the point of the test: anywhere in a typical start-up.
            let typical = self.typical_start_ms().max(20);
            let ms = self.next() % typical;
            std::thread::sleep(Duration::from_millis(ms));
            agent.kill();
            self.after_kill(i);
            self.counts.killed_start_up += 1;
            return;
        }
        match agent.wait_ready(&self.socket, Duration::from_secs(30)) {
            Ok(took) => self
                .counts
                .start_ms
                .push(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
            Err(e) => {
                self.finding(i, format!("the agent did not start: {e}"));
                agent.kill();
                self.counts.failed_starts += 1;
                return;
            }
        }
        let status = call(&self.socket, "status", json!({}))
            .map(|v| v["result"].clone())
            .unwrap_or_default();
        if i.is_multiple_of(10) || std::env::var_os("POSGUARD_LIFETIME_VERBOSE").is_some() {
            eprintln!(
                "day {i}: up in {} ms; journal head {} shipped {} dropped {}; collector {}; \
                 {} s",
                self.counts.start_ms.last().copied().unwrap_or(0),
                status["journal"]["head_seq"],
                status["journal"]["shipped_seq"],
                status["journal"]["dropped"],
                if self.collector.is_up() { "up" } else { "down" },
                self.began.elapsed().as_secs()
            );
        }
        // After a kill the agent says that the records after the last checkpoint are not
        // TPM-anchored: that is what a kill leaves, not a finding.
        let unanchored_after_kill = previous_killed
            && status["condition"]
                .as_str()
                .is_some_and(|c| c.starts_with("unanchored tail at start"));
        if status["condition"] != "ok" && !unanchored_after_kill {
            self.finding(
                i,
                format!(
                    "start-up check: condition {}, journal {}",
                    status["condition"], status["journal"]
                ),
            );
        }
        if i == 0 {
            self.enroll_clerks(i);
        }
        let tag = format!("d{i}");
        if ending == Ending::KillDuringTraffic {
            let stop = Arc::new(AtomicBool::new(false));
            let (socket, events, stop2) = (self.socket.clone(), self.sizes.events, stop.clone());
            let traffic =
                std::thread::spawn(move || pos_traffic(&socket, 2, events / 2, &tag, &stop2));
            // The kill moment is the point of the test: somewhere in the traffic.
            let ms = self.next() % 40;
            std::thread::sleep(Duration::from_millis(ms));
            agent.kill();
            self.after_kill(i);
            stop.store(true, Ordering::Relaxed);
            let (acked, _) = traffic.join().unwrap();
            self.acked.extend(acked);
            self.counts.killed_traffic += 1;
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, refused) = pos_traffic(&self.socket, 2, self.sizes.events / 2, &tag, &stop);
        self.acked.extend(acked);
        if let Some(r) = refused.first() {
            self.finding(
                i,
                format!("{} POS events refused, first: {r}", refused.len()),
            );
        }
        self.cache_and_logins(i, offset);
        if burst {
            self.overflow_burst(i, agent.pid());
        }
        if i % 50 == 1 {
            self.sample_rss(i, agent.pid());
        }
        match agent.terminate() {
            Some(s) if s.success() => self.counts.clean += 1,
            // glibc's heap checks abort a stop now and then under the libfaketime preload this
            // test needs for its clock ("double free or corruption", "malloc_consolidate()"),
            // or the corrupted heap ends it in SIGSEGV (about 1 in 1,000 stops; never seen
            // without the preload in the restart test's hundreds of stops). Not traced yet
            // (docs/PERFORMANCE.md, "Field lifetime"): the stop is counted and reported, and
            // what follows is what follows a kill: every assertion on the data still holds.
            Some(s)
                if matches!(
                    std::os::unix::process::ExitStatusExt::signal(&s),
                    Some(6 | 11)
                ) =>
            {
                self.counts.aborted_stops += 1;
                self.last_killed = true;
                self.after_kill(i);
                eprintln!("day {i}: the clean stop crashed ({s}) under the libfaketime preload");
            }
            other => {
                self.counts.failed_stops += 1;
                self.finding(i, format!("a clean stop (SIGTERM) ended with {other:?}"));
            }
        }
    }

    /// An overflow cycle in every other incident cycle, on the second day of its outage.
    fn burst_day(&self, i: u64) -> bool {
        i % self.sizes.period == 11 && (i / self.sizes.period).is_multiple_of(2)
    }

    pub(crate) fn typical_start_ms(&self) -> u64 {
        let s = &self.counts.start_ms;
        if s.is_empty() {
            return 100;
        }
        let mut v = s.clone();
        v.sort_unstable();
        v[v.len() / 2]
    }

    pub fn sample_rss(&mut self, day: u64, pid: u32) {
        if let (Some(rss), Some(anon)) = (
            proc_status_kib(pid, "VmRSS:"),
            proc_status_kib(pid, "RssAnon:"),
        ) {
            self.counts.rss.push((day, rss, anon));
        }
        let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
        self.counts.hwm_kib = self.counts.hwm_kib.max(hwm);
    }
}

/// Helper for check.rs: the stored rows of the device as JSON values.
pub fn stored_rows(config: &std::path::Path) -> Vec<Value> {
    posguard_e2e::device_events(config, DEVICE)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
