//! Business events reported by the POS application.

use serde::{Deserialize, Serialize};

use crate::text::{Currency, SafeText, ShortCode};

/// What the POS application did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PosAction {
    /// Money returned to a customer.
    Refund,
    /// The cash drawer opened.
    DrawerOpen,
    /// A price changed by hand.
    PriceOverride,
    /// A line or a sale voided.
    Void,
    /// The drawer opened without a sale.
    NoSale,
    /// Anything else, named by the POS application.
    Other(ShortCode),
}

/// An amount in minor units (cents), at most 999 999 999 999.
///
/// The bound (12 digits) is below the length of any card number (13 to 19 digits), so even this
/// numeric field cannot carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MinorUnits(u64);

/// An amount above [`MinorUnits::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount exceeds {max} minor units", max = MinorUnits::MAX)]
pub struct AmountTooLarge;

impl MinorUnits {
    /// Largest amount.
    pub const MAX: u64 = 999_999_999_999;

    /// Validates an amount.
    pub fn new(minor: u64) -> Result<Self, AmountTooLarge> {
        if minor > Self::MAX {
            return Err(AmountTooLarge);
        }
        Ok(Self(minor))
    }

    /// The amount in minor units.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for MinorUnits {
    type Error = AmountTooLarge;
    fn try_from(minor: u64) -> Result<Self, Self::Error> {
        Self::new(minor)
    }
}

impl From<MinorUnits> for u64 {
    fn from(amount: MinorUnits) -> Self {
        amount.0
    }
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor units.
    pub minor: MinorUnits,
    /// ISO 4217 code.
    pub currency: Currency,
}

/// A business event from the POS application.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PosEvent {
    /// What happened.
    pub action: PosAction,
    /// The amount involved, if any (for a price override: the new price).
    pub amount: Option<Money>,
    /// A short reference (receipt or line number) chosen by the POS application.
    pub reference: Option<SafeText>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_bound() {
        assert!(MinorUnits::new(MinorUnits::MAX).is_ok());
        assert_eq!(MinorUnits::new(4_111_111_111_111_111), Err(AmountTooLarge));
        let bytes = postcard::to_stdvec(&4_111_111_111_111_111u64).unwrap();
        assert!(postcard::from_bytes::<MinorUnits>(&bytes).is_err());
    }
}
