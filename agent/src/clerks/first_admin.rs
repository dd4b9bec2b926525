//! Undoing a first admin whose TOTP was never confirmed: `clerk.discard_unconfirmed`.
//!
//! The first admin is enrolled by root without a session (see [`super::admin`]); the
//! provisioning tool then confirms the TOTP seed with a login. If the technician's code never
//! matches (a mistyped code, a phone with a wrong clock, a run interrupted), the admin would be
//! left enrolled but unusable, and no second first admin could be enrolled. Root may therefore
//! remove that admin again, but only while it is the terminal's only clerk and no TOTP code of
//! it was ever accepted (so nobody has ever logged in with it): then nothing else is lost.

use posguard_proto::event::{Actor, EventKind, PeerCred};
use posguard_proto::local_api::{ApiError, ErrorCode};
use posguard_proto::text::ClerkId;
use serde_json::{Value, json};

use super::{Clerks, internal};

impl Clerks {
    /// `clerk.discard_unconfirmed`: removes `clerk` if the caller is root, it is the only
    /// clerk, and its TOTP was never confirmed. Its throttle state goes with it.
    pub async fn discard_unconfirmed(
        &self,
        clerk: &str,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        if peer.uid != 0 {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "only root may discard an unconfirmed first admin",
            ));
        }
        let id = ClerkId::new(clerk)
            .map_err(|e| ApiError::new(ErrorCode::BadParams, format!("clerk: {e}")))?;
        let stored = self
            .store
            .clerk(&id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no clerk {id}")))?;
        let only = self.store.clerk_ids().map_err(internal)?.len() == 1;
        let unconfirmed = stored.totp.as_ref().is_some_and(|t| t.last_step.is_none());
        if !only || !unconfirmed {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{id} is not an unconfirmed first admin (it has logged in, has no TOTP, or \
                     other clerks exist); remove clerks with an admin session (clerk.remove)"
                ),
            ));
        }
        self.store.remove_clerk(&id).map_err(internal)?;
        self.audit(
            Actor::System,
            peer,
            EventKind::ClerkRemoved { clerk: id.clone() },
            None,
        )
        .await?;
        Ok(json!({ "clerk": id.as_str(), "removed": true }))
    }
}
