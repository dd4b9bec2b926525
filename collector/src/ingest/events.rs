//! What a stored event triggers: alerts (honeypot, lockout storm, MFA failures) and the
//! delivery mark of a command the agent reports having received.

use posguard_proto::event::{Event, EventKind, Severity};

use super::Run;
use crate::alerts::{AlertKind, WindowRule, classify};
use crate::store::StoreError;

impl Run<'_> {
    pub(super) fn on_event(&mut self, event: &Event) -> Result<(), StoreError> {
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
        match classify(event) {
            None => Ok(()),
            Some(Ok(alert)) => self.alert_with(alert.kind, alert.severity, alert.detail, true),
            Some(Err(rule)) => self.window_rule(rule, event),
        }
    }

    fn window_rule(&mut self, rule: WindowRule, event: &Event) -> Result<(), StoreError> {
        let (kind, event_kind, window_s, threshold, device) = match rule {
            WindowRule::LockoutStorm => (
                AlertKind::LockoutStorm,
                "locked_out",
                self.rules.lockout_storm_window_s,
                self.rules.lockout_storm_count,
                None,
            ),
            WindowRule::MfaFailures => (
                AlertKind::MfaFailures,
                "mfa_failed",
                self.rules.mfa_failure_window_s,
                self.rules.mfa_failure_count,
                Some(self.id.clone()),
            ),
        };
        let window_ms = window_s.saturating_mul(1000);
        let since = event.stamp.wall_ms.saturating_sub(window_ms);
        let count = self.tx.count_events(event_kind, device.as_deref(), since)?;
        if count < threshold {
            return Ok(());
        }
        let recent = self.now_ms.saturating_sub(window_ms);
        if self.tx.alert_since(kind, device.as_deref(), recent)? {
            return Ok(());
        }
        let scope = if device.is_some() {
            "on this device"
        } else {
            "across the fleet"
        };
        self.alert_with(
            kind,
            Severity::Critical,
            format!("{count} {event_kind} events {scope} within {window_s} s"),
            device.is_some(),
        )
    }
}
