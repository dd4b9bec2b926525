//! Step-by-step progress for technicians: one line per step with its outcome and duration, and
//! a JSON summary for machines.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Outcome of one step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What was done.
    pub name: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What was found, or what went wrong.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub millis: f64,
}

/// Collects steps and prints each as it finishes (unless quiet).
#[derive(Debug, Default)]
pub struct Report {
    steps: Vec<Step>,
    quiet: bool,
}

impl Report {
    /// A report that prints progress lines to stdout unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Report {
            steps: Vec::new(),
            quiet,
        }
    }

    /// Runs `f` as a step named `name`; records and prints its outcome. Returns its value.
    pub fn step<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), E>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = f();
        let elapsed = started.elapsed();
        let (value, ok, detail) = match result {
            Ok((v, detail)) => (Some(v), true, detail),
            Err(e) => (None, false, format!("{e:#}")),
        };
        self.record(name, ok, detail, elapsed);
        value
    }

    /// Like [`Report::step`], with a spinner on stderr while it runs (when stderr is a terminal).
    pub fn step_slow<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), E>,
    ) -> Option<T> {
        use std::io::IsTerminal;
        if self.quiet || !std::io::stderr().is_terminal() {
            return self.step(name, f);
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let (done, name) = (done.clone(), name.to_owned());
            std::thread::spawn(move || {
                let frames = ['|', '/', '-', '\\'];
                let mut i = 0usize;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let frame = frames.get(i % frames.len()).copied().unwrap_or('|');
                    let _ = write!(std::io::stderr(), "\r  [ {frame}  ] {name}");
                    i = i.wrapping_add(1);
                    std::thread::sleep(Duration::from_millis(120));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            })
        };
        {
            let started = Instant::now();
            let result = f();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = spinner.join();
            let elapsed = started.elapsed();
            match result {
                Ok((v, detail)) => {
                    self.record(name, true, detail, elapsed);
                    Some(v)
                }
                Err(e) => {
                    self.record(name, false, format!("{e:#}"), elapsed);
                    None
                }
            }
        }
    }

    /// Prints a block of text (a QR code, a URI) unless the report is quiet.
    pub fn show(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    fn record(&mut self, name: &str, ok: bool, detail: String, elapsed: Duration) {
        let step = Step {
            name: name.to_owned(),
            ok,
            detail,
            millis: elapsed.as_secs_f64() * 1000.0,
        };
        if !self.quiet {
            // A closed stdout (piped into `head`) must not abort provisioning.
            let _ = writeln!(
                std::io::stdout(),
                "  [{}] {:<44} {:>9.2} ms  {}",
                if ok { " ok " } else { "FAIL" },
                step.name,
                step.millis,
                step.detail
            );
        }
        self.steps.push(step);
    }

    /// Whether progress lines are suppressed (`--json`).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// All steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether every step succeeded.
    pub fn all_ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}
