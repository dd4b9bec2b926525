//! What the shop does with the terminal on a day, besides sales: the first admin and a clerk
//! enrolled on day one, clerk logins, cache puts read back, data-key rotations by an admin who
//! logs in with TOTP at the terminal's (shifted) time, and the burst that overflows the journal
//! while the collector is down.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use posguard_e2e::lifetime::{call, pos_traffic, real_now};
use serde_json::json;

use crate::sim::Sim;

const ADMIN: &str = "lt-admin";
const ADMIN_SECRET: &str = "lifetime admin 2026";
const CLERK: &str = "lt-clerk";
const CLERK_PIN: &str = "583921";

impl Sim {
    /// The first admin (enrolled without a token, as provisioning does) and a clerk.
    pub(crate) fn enroll_clerks(&mut self, i: u64) {
        let admin = call(
            &self.socket,
            "clerk.enroll",
            json!({"clerk": ADMIN, "role": "Admin", "secret": ADMIN_SECRET}),
        )
        .unwrap_or_default();
        let Some(secret) = admin["result"]["totp_secret"].as_str() else {
            self.finding(i, format!("first admin not enrolled: {admin}"));
            return;
        };
        self.admin_totp = Some(secret.to_owned());
        let Some(token) = self.admin_session(i, self.sim_offset) else {
            return;
        };
        let clerk = call(
            &self.socket,
            "clerk.enroll",
            json!({"token": token, "clerk": CLERK, "role": "Clerk", "secret": CLERK_PIN}),
        )
        .unwrap_or_default();
        if clerk["ok"] != true {
            self.finding(i, format!("clerk not enrolled: {clerk}"));
        }
    }

    /// An admin session: password, then the TOTP code for the terminal's (shifted) clock.
    fn admin_session(&mut self, i: u64, offset: i64) -> Option<String> {
        let secret = self.admin_totp.clone()?;
        let step1 = call(
            &self.socket,
            "login",
            json!({"clerk": ADMIN, "secret": ADMIN_SECRET}),
        )
        .unwrap_or_default();
        let Some(challenge) = step1["result"]["challenge"].as_str() else {
            self.finding(i, format!("admin login: {step1}"));
            return None;
        };
        let out = std::process::Command::new("oathtool")
            .args(["--totp", "-b", &format!("--now=@{}", real_now() + offset)])
            .arg(&secret)
            .output()
            .expect("run oathtool (scripts/lib/common.sh installs it)");
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let step2 = call(
            &self.socket,
            "verify_mfa",
            json!({"challenge": challenge, "totp": code}),
        )
        .unwrap_or_default();
        match step2["result"]["token"].as_str() {
            Some(t) => Some(t.to_owned()),
            None => {
                self.finding(i, format!("admin TOTP refused: {step2}"));
                None
            }
        }
    }

    /// Cache puts every day (read back, also after a rotation), a clerk login every fifth day,
    /// a data-key rotation every 25th day on which the terminal's clock is right.
    pub(crate) fn cache_and_logins(&mut self, i: u64, offset: i64) {
        let ids: Vec<String> = (0..2).map(|k| format!("txn-{i}-{k}")).collect();
        for id in &ids {
            let value = data_encoding_b64(format!("basket of day {i} {id}").as_bytes());
            let r = call(
                &self.socket,
                "cache.put",
                json!({"id": id, "value_b64": value, "retention_secs": 3600}),
            )
            .unwrap_or_default();
            if r["ok"] == true {
                self.counts.cache_puts += 1;
            } else {
                self.finding(i, format!("cache.put {id}: {r}"));
            }
        }
        if i % 5 == 2 {
            let r = call(
                &self.socket,
                "login",
                json!({"clerk": CLERK, "secret": CLERK_PIN}),
            )
            .unwrap_or_default();
            match r["result"]["token"].as_str() {
                Some(token) => {
                    self.counts.clerk_logins += 1;
                    let _ = call(&self.socket, "logout", json!({"token": token}));
                }
                None => self.finding(i, format!("clerk login: {r}")),
            }
        }
        if i % 25 == 5
            && offset == self.sim_offset
            && let Some(token) = self.admin_session(i, offset)
        {
            let r =
                call(&self.socket, "cache.rotate_key", json!({"token": token})).unwrap_or_default();
            if r["result"]["key_version"].as_u64().is_some() {
                self.counts.rotations += 1;
            } else {
                self.finding(i, format!("cache.rotate_key: {r}"));
            }
            let _ = call(&self.socket, "logout", json!({"token": token}));
        }
        for id in &ids {
            let r = call(&self.socket, "cache.get", json!({"id": id})).unwrap_or_default();
            if r["ok"] != true {
                self.finding(i, format!("cache.get {id} after put: {r}"));
            }
        }
    }

    /// With the collector down: POS traffic until the 1 MiB journal overflows, then a little more.
    pub(crate) fn overflow_burst(&mut self, i: u64, pid: u32) {
        let dropped = |s: &Self| {
            call(&s.socket, "status", json!({}))
                .and_then(|v| v["result"]["journal"]["dropped"].as_u64())
                .unwrap_or(0)
        };
        let before = dropped(self);
        let stop = Arc::new(AtomicBool::new(false));
        for round in 0..40 {
            // Long references: larger records fill the 1 MiB bound with fewer events.
            let tag = format!("d{i}-burst{round}-{}", "x".repeat(180));
            let (acked, refused) = pos_traffic(&self.socket, 8, 250, &tag, &stop);
            self.acked.extend(acked);
            if let Some(r) = refused.first() {
                self.finding(
                    i,
                    format!("overflow burst refused {} events: {r}", refused.len()),
                );
                return;
            }
            if dropped(self) > before && round % 2 == 1 {
                self.counts.overflow_bursts += 1;
                self.sample_rss(i, pid);
                return;
            }
        }
        self.finding(
            i,
            "80,000 events with the collector down never overflowed 1 MiB".into(),
        );
    }
}

/// Standard base64 (padded), as the local API takes cache values.
fn data_encoding_b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
