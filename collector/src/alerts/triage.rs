//! Triage of stored alerts by a team that shares one queue across shifts: the states an alert
//! goes through (open → acknowledged → resolved, an acknowledgement that may expire), the
//! filters of `posguard-collector alerts`, and the refusals of an action the state does not
//! allow. Pure: the store applies the decisions ([`crate::store::Store::alert_triage`]).

use serde::Serialize;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised and nobody has taken it yet (also: an acknowledgement that expired).
    Open,
    /// Someone took it (who, when, why, until when).
    Acknowledged,
    /// Closed with a note; the same cause again opens a new alert.
    Resolved,
}

impl AlertState {
    /// Every state, in workflow order.
    pub const ALL: [Self; 3] = [Self::Open, Self::Acknowledged, Self::Resolved];

    /// The stable name (store column, JSON, CLI).
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// A triage action, as recorded in the alert's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageAction {
    /// Take the alert; `until_ms` makes it open again at that time if not resolved by then.
    Acknowledge {
        /// When the acknowledgement lapses (Unix ms); `None`: until resolved.
        until_ms: Option<u64>,
    },
    /// Close it.
    Resolve,
    /// Open a resolved or acknowledged alert again.
    Reopen,
}

impl TriageAction {
    /// The stable name in the history (`alert_actions.action`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge { .. } => "acknowledge",
            Self::Resolve => "resolve",
            Self::Reopen => "reopen",
        }
    }

    /// The state the action leaves the alert in.
    pub fn target(&self) -> AlertState {
        match self {
            Self::Acknowledge { .. } => AlertState::Acknowledged,
            Self::Resolve => AlertState::Resolved,
            Self::Reopen => AlertState::Open,
        }
    }

    /// Whether the action is allowed from `state`: a resolved alert is reopened before it is
    /// acknowledged or resolved again (its recurrence would be a new alert anyway), and an
    /// open alert cannot be reopened. Acknowledging again (a hand-over, a new expiry) is allowed.
    pub fn allowed_from(&self, state: AlertState) -> bool {
        match self {
            Self::Acknowledge { .. } | Self::Resolve => state != AlertState::Resolved,
            Self::Reopen => state != AlertState::Open,
        }
    }
}

/// A triage request: the action, who does it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triage {
    /// What.
    pub action: TriageAction,
    /// Who (an operator's name).
    pub by: String,
    /// Why.
    pub note: String,
}

/// Why a triage action was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TriageRefusal {
    /// No alert has this id.
    #[error("no alert {0} in the store; list the ids with `posguard-collector alerts --state all`")]
    NoSuchAlert(i64),
    /// The alert's state does not allow the action.
    #[error("alert {id} is {state}; {hint}", state = state.name())]
    WrongState {
        /// The alert.
        id: i64,
        /// Its state.
        state: AlertState,
        /// What to do instead.
        hint: &'static str,
    },
}

impl TriageRefusal {
    /// The refusal of `action` on alert `id` in `state`.
    pub fn wrong_state(id: i64, state: AlertState, action: &TriageAction) -> Self {
        let hint = match action {
            TriageAction::Reopen => "only an acknowledged or resolved alert can be reopened",
            _ => "reopen it first (`posguard-collector alerts reopen ID --note TEXT`)",
        };
        Self::WrongState { id, state, hint }
    }
}

/// One entry of an alert's triage history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRow {
    /// When (Unix ms).
    pub at_ms: u64,
    /// `acknowledge`, `resolve`, `reopen`, or `expire` (an acknowledgement that lapsed).
    pub action: String,
    /// Who (`collector` for an expiry).
    pub by: String,
    /// Why.
    pub note: Option<String>,
    /// For `acknowledge`: until when (Unix ms), if it expires.
    pub until_ms: Option<u64>,
}

/// What `alerts` lists. Every field narrows; empty lists and `None` do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// These states (empty: every state).
    pub states: Vec<AlertState>,
    /// These severity names (empty: every severity).
    pub severities: Vec<String>,
    /// These kind names (empty: every kind).
    pub kinds: Vec<String>,
    /// Only this device.
    pub device_id: Option<String>,
    /// Alerts last seen at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Alerts first raised before (Unix ms).
    pub until_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use AlertState::*;
        let ack = TriageAction::Acknowledge { until_ms: None };
        for (action, from, allowed) in [
            (&ack, Open, true),
            (&ack, Acknowledged, true),
            (&ack, Resolved, false),
            (&TriageAction::Resolve, Open, true),
            (&TriageAction::Resolve, Acknowledged, true),
            (&TriageAction::Resolve, Resolved, false),
            (&TriageAction::Reopen, Open, false),
            (&TriageAction::Reopen, Acknowledged, true),
            (&TriageAction::Reopen, Resolved, true),
        ] {
            assert_eq!(
                action.allowed_from(from),
                allowed,
                "{action:?} from {from:?}"
            );
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in AlertState::ALL {
            assert_eq!(AlertState::from_name(s.name()), Some(s));
        }
    }
}
