//! The first admin and the end-to-end self-test, through the running agent's local API: what
//! `posguard-provision admin` (and `init --admin`) do once the terminal is provisioned.
//!
//! The first admin counts only once its TOTP is confirmed by a login with a current code. Until
//! then it is "unconfirmed": if every attempt fails (or the run is interrupted), it is removed
//! again through `clerk.discard_unconfirmed` (root only, only while it is the only clerk and no
//! code of it was ever accepted), so the technician can simply run `admin` again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::agent_api::{self, at};
use crate::report::Report;

/// How many codes the technician may type before the unconfirmed admin is removed. Three
/// stays below the agent's throttle (a delay from the fourth consecutive failure).
pub const CODE_ATTEMPTS: u32 = 3;

/// The TOTP seed of the new admin: what the technician scans or types into the authenticator.
#[derive(Clone, Serialize)]
pub struct ShownSeed {
    /// The admin's clerk id.
    pub clerk: String,
    /// `otpauth://` URI (what the QR code holds).
    pub otpauth_uri: String,
    /// The seed in base32, for typing by hand.
    pub totp_secret: String,
}

impl std::fmt::Debug for ShownSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShownSeed")
            .field("clerk", &self.clerk)
            .finish_non_exhaustive()
    }
}

impl Drop for ShownSeed {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.otpauth_uri.zeroize();
        self.totp_secret.zeroize();
    }
}

/// Where the technician's answers come from (a terminal, or a script on standard input).
pub trait Technician {
    /// The seed was enrolled: show it (QR code, URI, base32 seed; or one JSON line).
    fn show_seed(&mut self, seed: &ShownSeed);
    /// A current 6-digit code, attempt `attempt` of `of`; `None` when there is no more input.
    fn code(&mut self, attempt: u32, of: u32) -> anyhow::Result<Option<Zeroizing<String>>>;
}

fn enroll_call(socket: &Path, admin: &str, password: &str) -> anyhow::Result<serde_json::Value> {
    agent_api::call(
        socket,
        "clerk.enroll",
        json!({"clerk": admin, "role": "SuperAdmin", "secret": password}),
    )
}

/// Enrolls `admin`; if an unconfirmed first admin of an earlier attempt is in the way (the only
/// clerk, never logged in), removes it first. Returns the seed and what happened.
fn enroll(socket: &Path, admin: &str, password: &str) -> anyhow::Result<(ShownSeed, String)> {
    let first = enroll_call(socket, admin, password);
    let (v, note) = match first {
        Ok(v) => (
            v,
            format!("{admin} (SuperAdmin, TOTP required), unconfirmed"),
        ),
        Err(e) if e.to_string().starts_with("unauthenticated") => {
            // A clerk exists. If it is an earlier attempt's unconfirmed admin of this id, the
            // agent lets root discard it; any other clerk is refused there, and then the
            // terminal already has its admin.
            agent_api::call(socket, "clerk.discard_unconfirmed", json!({"clerk": admin})).map_err(
                |d| {
                    anyhow!(
                        "this terminal already has clerks ({d:#}); a confirmed admin adds more \
                         with posguardctl; if no admin can log in any more, see docs/runbook.md \
                         (\"First admin at a terminal\")"
                    )
                },
            )?;
            let v = enroll_call(socket, admin, password)?;
            (
                v,
                format!(
                    "{admin} (SuperAdmin), unconfirmed; an earlier unconfirmed attempt was removed"
                ),
            )
        }
        Err(e) if e.to_string().starts_with("bad_params") => {
            bail!("{e:#}; nothing was created: choose another password or id and run again")
        }
        Err(e) => return Err(e),
    };
    let seed = ShownSeed {
        clerk: admin.to_owned(),
        otpauth_uri: at(&v, "/otpauth_uri")
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        totp_secret: at(&v, "/totp_secret")
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    if seed.otpauth_uri.is_empty() || seed.totp_secret.is_empty() {
        bail!("the agent enrolled {admin} without a TOTP seed; it is removed on the next run");
    }
    Ok((seed, note))
}

fn discard(socket: &Path, admin: &str) -> String {
    match agent_api::call(socket, "clerk.discard_unconfirmed", json!({"clerk": admin})) {
        Ok(_) => format!("the unconfirmed admin {admin} was removed; nothing else changed"),
        Err(e) => format!(
            "the unconfirmed admin {admin} could not be removed ({e:#}); the next `admin` run \
             removes it before enrolling"
        ),
    }
}

/// One code checked with a real login (then logged out). `Ok(false)`: refused, try again.
fn try_code(socket: &Path, admin: &str, password: &str, code: &str) -> anyhow::Result<bool> {
    match agent_api::call(
        socket,
        "login",
        json!({"clerk": admin, "secret": password, "totp": code}),
    ) {
        Ok(v) if at(&v, "/status") == "granted" => {
            if let Some(token) = at(&v, "/token").as_str() {
                let _ = agent_api::call(socket, "logout", json!({"token": token}));
            }
            Ok(true)
        }
        Ok(v) => bail!("unexpected answer to the login: {}", at(&v, "/status")),
        Err(e) if e.to_string().starts_with("login_failed") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Enrolls the first admin through the agent's local API (root, no confirmed clerk yet), shows
/// the TOTP seed, and confirms it with a code typed by the technician (up to
/// [`CODE_ATTEMPTS`]). On failure the unconfirmed admin is removed and the error says what to
/// run next. Returns the seed (the JSON report carries it).
pub fn first_admin(
    socket: &Path,
    admin: &str,
    password: &str,
    tech: &mut dyn Technician,
    report: &mut Report,
) -> anyhow::Result<ShownSeed> {
    let rerun = format!(
        "posguard-provision admin --admin {admin} --socket {}",
        socket.display()
    );
    report
        .step_slow("agent answering", || {
            agent_api::wait_ready(socket, Duration::from_secs(60))?;
            Ok::<_, anyhow::Error>(((), socket.display().to_string()))
        })
        .ok_or_else(|| {
            anyhow!("the agent is not running: start it (systemctl start posguard-agent), then run `{rerun}`")
        })?;
    let seed = report
        .step("first admin enrolled", || enroll(socket, admin, password))
        .ok_or_else(|| {
            anyhow!("first admin not enrolled (the step above says why); fix it and run `{rerun}`")
        })?;
    tech.show_seed(&seed);
    let mut refused = 0;
    let outcome = report.step("admin TOTP confirmed with a current code", || {
        for attempt in 1..=CODE_ATTEMPTS {
            let Some(code) = tech.code(attempt, CODE_ATTEMPTS)? else {
                bail!("no code was given");
            };
            let code = code.trim();
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                refused += 1;
                report_line(&format!(
                    "  that is not a 6-digit code ({} left)",
                    CODE_ATTEMPTS - attempt
                ));
                continue;
            }
            if try_code(socket, admin, password, code)? {
                return Ok((
                    (),
                    format!("accepted (attempt {attempt} of {CODE_ATTEMPTS})"),
                ));
            }
            refused += 1;
            report_line(&format!(
                "  the code was not accepted ({} left): check the authenticator's clock",
                CODE_ATTEMPTS - attempt
            ));
        }
        bail!("{refused} codes were not accepted")
    });
    if outcome.is_none() {
        let removed = discard(socket, admin);
        bail!(
            "the TOTP code was not confirmed: {removed}. Set the authenticator's time to automatic, \
             then run `{rerun}` (a new seed is shown)"
        );
    }
    Ok(seed)
}

/// A hint between attempts, on stderr so that `--json` output stays machine-readable.
fn report_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// End-to-end self-test: a record made now (`audit.record`) is acknowledged by the collector
/// within `timeout`, proving the uplink (mTLS with the TPM key) works now, not at some earlier
/// time.
pub fn self_test(socket: &Path, timeout: Duration, report: &mut Report) -> anyhow::Result<()> {
    report
        .step_slow("self-test: a new record acknowledged by the collector", || {
            let s = agent_api::call(socket, "status", json!({}))?;
            if at(&s, "/uplink").is_null() {
                bail!("the agent has no uplink configured ([uplink] in agent.toml)");
            }
            let v = agent_api::call(
                socket,
                "audit.record",
                json!({"action": "selftest", "reference": "posguard-provision self-test"}),
            )?;
            let seq = at(&v, "/seq")
                .as_u64()
                .ok_or_else(|| anyhow!("the agent did not say which seq it recorded"))?;
            let deadline = Instant::now() + timeout;
            loop {
                let s = agent_api::call(socket, "status", json!({}))?;
                let acked = at(&s, "/uplink/acked_seq").as_u64().unwrap_or(0);
                if acked >= seq {
                    return Ok::<_, anyhow::Error>((
                        (),
                        format!("record seq {seq} acknowledged (collector holds up to {acked})"),
                    ));
                }
                if Instant::now() > deadline {
                    bail!(
                        "the collector did not acknowledge seq {seq} within {} s (acknowledged up to \
                         {acked}, {} uplink failures): run `posguard-provision status` to see why",
                        timeout.as_secs(),
                        at(&s, "/uplink/failures")
                    );
                }
                // Polling the agent's counters; the uplink ships on its own schedule.
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .ok_or_else(|| anyhow!("self-test failed"))?;
    Ok(())
}

/// What `posguard-provision admin` (or `init --admin`) was asked to do.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The agent's socket.
    pub socket: PathBuf,
    /// The first admin to enroll; `None`: only the end-to-end self-test.
    pub admin: Option<String>,
    /// Read the password from this owner-only file instead of asking.
    pub password_file: Option<PathBuf>,
    /// How long the collector may take to acknowledge the self-test's record.
    pub selftest_timeout: Duration,
}

impl AdminOptions {
    /// Enroll `admin` through `socket`, password asked, 60 s for the self-test.
    pub fn new(socket: &Path, admin: &str) -> Self {
        AdminOptions {
            socket: socket.to_path_buf(),
            admin: Some(admin.to_owned()),
            password_file: None,
            selftest_timeout: Duration::from_secs(60),
        }
    }
}

/// The first admin (unless only the self-test was asked for), then the self-test. Returns the
/// shown seed for the report.
pub fn run(
    opts: &AdminOptions,
    tech: &mut dyn Technician,
    report: &mut Report,
) -> anyhow::Result<Option<ShownSeed>> {
    let seed = match &opts.admin {
        Some(admin) => {
            let password = crate::prompt::new_password(
                &format!("Password for {admin} (at least 12 characters, letters and digits): "),
                opts.password_file.as_deref(),
            )?;
            Some(first_admin(&opts.socket, admin, &password, tech, report)?)
        }
        None => None,
    };
    self_test(&opts.socket, opts.selftest_timeout, report)?;
    Ok(seed)
}
