//! A device's life as the collector records it: which generation of the device id is current
//! and whether it is active, decommissioned, or (for an archived generation) replaced. A device
//! without a row is active, generation 1. See docs/collector.md, "Device lifecycle".

use serde::Serialize;

/// Where a device (or an archived generation of it) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeState {
    /// Provisioned and expected to ship.
    Active,
    /// Taken out of service by operations (`device decommission`): its certificates revoked.
    Decommissioned,
    /// An archived generation whose terminal was re-provisioned with a new identity key
    /// without being decommissioned first.
    Replaced,
}

impl LifeState {
    /// The stable name (stored, printed).
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Decommissioned => "decommissioned",
            Self::Replaced => "replaced",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Self::Active),
            "decommissioned" => Some(Self::Decommissioned),
            "replaced" => Some(Self::Replaced),
            _ => None,
        }
    }
}

/// One device id's (or archived generation's) lifecycle row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleRow {
    /// The device id, or an archived generation's id `<device id>@gen<N>`.
    pub device_id: String,
    /// Where it stands.
    pub state: LifeState,
    /// 1 for the first provisioning of the id, +1 for each re-provisioning that started a new
    /// chain.
    pub generation: u64,
    /// Why it was decommissioned, as operations gave it.
    pub reason: Option<String>,
    /// When the state last changed (collector wall time, Unix ms).
    pub changed_ms: u64,
}

impl LifecycleRow {
    /// The implicit row of a device id that has none: active, generation 1.
    pub fn first(device_id: &str, now_ms: u64) -> Self {
        Self {
            device_id: device_id.to_owned(),
            state: LifeState::Active,
            generation: 1,
            reason: None,
            changed_ms: now_ms,
        }
    }
}

/// The id an archived generation's rows are kept under. `@` is outside the device-id alphabet,
/// so it can never be a terminal's own id.
pub fn archived_id(device_id: &str, generation: u64) -> String {
    format!("{device_id}@gen{generation}")
}

/// The device id an archived generation's id stands for (the id itself if not archived): the
/// chain's genesis and its certificates name that id.
pub fn base_id(id: &str) -> &str {
    id.split_once('@').map_or(id, |(base, _)| base)
}
