//! What a stored event triggers: alerts (honeypot, tamper, journal overflow, an exceeded
//! login budget and an admin's lockout at once; a lockout storm and wrong or replayed TOTP
//! codes past a threshold in a window) and the delivery mark of a command the agent reports having received.

use posguard_proto::event::{Event, EventKind, Role, Severity};

use super::Run;
use crate::alerts::{AlertKind, WindowRule, classify};
use crate::store::StoreError;

impl Run<'_> {
    /// `event` was just stored at `seq`.
    pub(super) fn on_event(&mut self, seq: u64, event: &Event) -> Result<(), StoreError> {
        let command = match &event.kind {
            EventKind::CommandReceived { command } | EventKind::CommandApplied { command } => {
                Some(command.command_seq)
            }
            EventKind::CommandRefused {
                command: Some(command),
                ..
            } => Some(command.command_seq),
            _ => None,
        };
        if let Some(seq) = command {
            self.tx.mark_command_delivered(&self.id, seq, self.now_ms)?;
        }
        if let EventKind::LockedOut {
            clerk, failures, ..
        } = &event.kind
        {
            self.admin_lockout(seq, clerk.as_str(), *failures)?;
        }
        match classify(event) {
            None => Ok(()),
            Some(Ok(alert)) => self.alert_with(alert.kind, alert.severity, alert.detail, true),
            Some(Err(rule)) => self.window_rule(rule, event),
        }
    }

    /// An Admin or SuperAdmin locked out (the role from the clerk's stored enrollment) is an
    /// alert of its own: those accounts manage the terminal and lift lockdown, and one of them
    /// locked out is someone guessing at the keys of the shop, not a cashier's bad morning.
    fn admin_lockout(&mut self, seq: u64, clerk: &str, failures: u32) -> Result<(), StoreError> {
        let role = match self.tx.clerk_role(&self.id, clerk, seq)? {
            Some(r @ (Role::Admin | Role::SuperAdmin)) => r,
            _ => return Ok(()),
        };
        self.alert_with(
            AlertKind::AdminLockedOut,
            Severity::Critical,
            format!("{role:?} {clerk} locked out after {failures} consecutive failures"),
            true,
        )
    }

    /// Counts the rule's events in the window before `event` (device clock) and raises its
    /// alert at the threshold; every further event while the alert is open or acknowledged
    /// adds to its count (one cause per device, or per fleet for `lockout_storm`).
    fn window_rule(&mut self, rule: WindowRule, event: &Event) -> Result<(), StoreError> {
        let (kind, event_kinds, window_s, threshold, device): (_, &[&str], _, _, _) = match rule {
            WindowRule::LockoutStorm => (
                AlertKind::LockoutStorm,
                &["locked_out"],
                self.rules.lockout_storm_window_s,
                self.rules.lockout_storm_count,
                None,
            ),
            WindowRule::MfaFailures => (
                AlertKind::MfaFailures,
                &["mfa_failed", "mfa_replayed"],
                self.rules.mfa_failure_window_s,
                self.rules.mfa_failure_count,
                Some(self.id.clone()),
            ),
        };
        let since = event
            .stamp
            .wall_ms
            .saturating_sub(window_s.saturating_mul(1000));
        let mut counts = Vec::with_capacity(event_kinds.len());
        for k in event_kinds {
            counts.push((*k, self.tx.count_events(k, device.as_deref(), since)?));
        }
        let count = counts.iter().fold(0u64, |n, (_, c)| n.saturating_add(*c));
        if count < threshold {
            return Ok(());
        }
        let what: Vec<String> = counts.iter().map(|(k, c)| format!("{c} {k}")).collect();
        let detail = match rule {
            WindowRule::LockoutStorm => format!(
                "{count} lockouts across the fleet within {window_s} s (threshold {threshold})"
            ),
            WindowRule::MfaFailures => format!(
                "{count} wrong or replayed TOTP codes on this device within {window_s} s \
                 ({}; threshold {threshold}), the last for clerk {}",
                what.join(", "),
                clerk_of(event).unwrap_or("?")
            ),
        };
        self.alert_with(kind, Severity::Critical, detail, device.is_some())
    }
}

/// The clerk an MFA event names.
fn clerk_of(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::MfaFailed { clerk } | EventKind::MfaReplayed { clerk, .. } => {
            Some(clerk.as_str())
        }
        _ => None,
    }
}
