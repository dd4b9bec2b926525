//! Stable error codes for peers and the alert each verification failure raises.

use posguard_proto::event::Severity;
use posguard_proto::verify::VerifyReason;

use crate::alerts::AlertKind;

/// The short code sent to the agent (HTTP 422 body) and the alert raised for `reason`.
pub fn classify(reason: &VerifyReason) -> (&'static str, AlertKind) {
    use AlertKind as A;
    use VerifyReason as R;
    match reason {
        R::Undecodable(_) | R::BadBody(_) => ("malformed_record", A::ChainBroken),
        R::SeqGap { .. } | R::UnexplainedGap { .. } | R::OverflowMismatch | R::TooManyGaps => {
            ("chain_gap", A::ChainGap)
        }
        R::Duplicate | R::Reordered { .. } => ("reordered", A::ChainBroken),
        R::BrokenLink => ("broken_link", A::ChainBroken),
        R::UnknownJournalKey => ("unknown_journal_key", A::BadSignature),
        R::HashMismatch => ("bad_hash", A::BadSignature),
        R::BadSignature => ("bad_signature", A::BadSignature),
        R::BootIdMismatch => ("boot_id_mismatch", A::ChainBroken),
        R::WrongDevice => ("wrong_device", A::BadSignature),
        R::BadCert => ("bad_cert", A::BadSignature),
        R::BadCertSignature => ("bad_cert_signature", A::BadSignature),
        R::BadJournalKey(_) => ("bad_journal_key", A::BadSignature),
        R::BadCheckpointSignature => ("bad_checkpoint_signature", A::BadSignature),
        R::CheckpointMismatch => ("checkpoint_mismatch", A::Fork),
        R::CheckpointNotAtHead { .. } => ("checkpoint_not_at_head", A::ChainBroken),
        R::CheckpointRegressed { .. } | R::CounterRollback { .. } => {
            ("counter_rollback", A::CounterRollback)
        }
        R::TooManyCerts => ("too_many_certs", A::ChainBroken),
        R::SeqExhausted => ("seq_exhausted", A::ChainBroken),
        R::BadState => ("bad_state", A::ChainBroken),
        _ => ("verify_failed", A::ChainBroken),
    }
}

/// How serious an alert of `kind` raised by a verification failure (or a certificate near its
/// expiry) is: a gap may be declared later and a certificate renews itself, so both warn.
pub fn severity(kind: AlertKind) -> Severity {
    match kind {
        AlertKind::ChainGap | AlertKind::CertExpiry => Severity::Warning,
        _ => Severity::Critical,
    }
}
