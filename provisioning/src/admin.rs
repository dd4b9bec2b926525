//! The first admin and the end-to-end self-test, through the running agent's local API: what
//! `posguard-provision admin` (and `init --admin`) do once the terminal is provisioned.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::json;

use crate::agent_api::{self, at};
use crate::report::Report;

/// Enrolls the first admin through the agent's local API (root, no clerk yet), shows the TOTP
/// seed as a QR code and URI, and confirms it with a code typed by the technician.
pub fn first_admin(
    socket: &Path,
    admin: &str,
    password: &str,
    code_source: &mut dyn FnMut() -> anyhow::Result<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    report
        .step_slow("agent answering", || {
            agent_api::wait_ready(socket, Duration::from_secs(60))?;
            Ok::<_, anyhow::Error>(((), socket.display().to_string()))
        })
        .ok_or_else(|| anyhow!("the agent is not running"))?;
    let enrolled = report
        .step("first admin enrolled", || {
            let v = agent_api::call(
                socket,
                "clerk.enroll",
                json!({"clerk": admin, "role": "SuperAdmin", "secret": password}),
            )?;
            Ok::<_, anyhow::Error>((v, format!("{admin} (SuperAdmin, TOTP required)")))
        })
        .ok_or_else(|| anyhow!("first admin not enrolled"))?;
    let uri = at(&enrolled, "/otpauth_uri")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    report.show(&crate::qr::render(&uri));
    report.show(&format!("  {uri}"));
    report
        .step("admin TOTP confirmed with a current code", || {
            let code = code_source()?;
            let v = agent_api::call(
                socket,
                "login",
                json!({"clerk": admin, "secret": password, "totp": code}),
            )?;
            if at(&v, "/status") != "granted" {
                bail!("the code was not accepted");
            }
            if let Some(token) = at(&v, "/token").as_str() {
                let _ = agent_api::call(socket, "logout", json!({"token": token}));
            }
            Ok(((), "accepted".to_owned()))
        })
        .ok_or_else(|| {
            anyhow!("the TOTP code was not confirmed: remove the clerk database and run again")
        })?;
    Ok(())
}

/// Self-test: the agent's uplink delivered a batch (mTLS with the TPM key, heartbeat accepted).
pub fn self_test(socket: &Path, report: &mut Report) -> anyhow::Result<()> {
    report
        .step_slow(
            "self-test: mTLS heartbeat accepted by the collector",
            || {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let s = agent_api::call(socket, "status", json!({}))?;
                    if at(&s, "/uplink/batches_acked").as_u64().unwrap_or(0) > 0 {
                        return Ok::<_, anyhow::Error>((
                            (),
                            format!(
                                "collector acknowledged up to seq {}",
                                at(&s, "/uplink/acked_seq")
                            ),
                        ));
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("no batch acknowledged within 60 s: {}", at(&s, "/uplink"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            },
        )
        .ok_or_else(|| anyhow!("self-test failed"))?;
    Ok(())
}
