//! Roles and the one fixed table of what each role may do.
//!
//! The table is monotone: every role may do everything the role below it may do. Clerks only sell;
//! the supervisor actions (refunds, price overrides, no-sale drawer openings) reach a clerk only
//! through a supervisor override ([`super::decide::decide_override`]). Lockdown is the
//! SuperAdmin's alone (DESIGN.md, "Clerk authentication").

use serde::{Deserialize, Serialize};

pub use posguard_proto::event::Role;

/// Every role, lowest privilege first.
pub const ALL_ROLES: [Role; 4] = [Role::Clerk, Role::Supervisor, Role::Admin, Role::SuperAdmin];

/// Something a logged-in clerk may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Ring up sales.
    Sell,
    /// Refund a sale.
    Refund,
    /// Change a price at the till.
    PriceOverride,
    /// Open the cash drawer without a sale.
    DrawerOpenNoSale,
    /// Approve another clerk's override (the second person of segregation of duties).
    ApproveOverride,
    /// Enroll a new clerk.
    EnrollClerk,
    /// Remove a clerk.
    RemoveClerk,
    /// Disable or enable a clerk.
    DisableClerk,
    /// End a clerk's or the terminal's lockout early.
    ResetLockout,
    /// Switch lockdown mode on.
    SetLockdown,
    /// Switch lockdown mode off.
    ClearLockdown,
    /// Replace a clerk's TOTP seed.
    RotateTotp,
    /// Administer the transaction cache.
    CacheAdmin,
    /// Read the audit journal.
    ViewAudit,
}

impl Permission {
    /// Every permission, in table order.
    pub const ALL: [Permission; 14] = [
        Permission::Sell,
        Permission::Refund,
        Permission::PriceOverride,
        Permission::DrawerOpenNoSale,
        Permission::ApproveOverride,
        Permission::EnrollClerk,
        Permission::RemoveClerk,
        Permission::DisableClerk,
        Permission::ResetLockout,
        Permission::SetLockdown,
        Permission::ClearLockdown,
        Permission::RotateTotp,
        Permission::CacheAdmin,
        Permission::ViewAudit,
    ];
}

/// The lowest role holding each permission; every higher role holds it too.
const fn lowest_role(perm: Permission) -> Role {
    match perm {
        Permission::Sell => Role::Clerk,
        Permission::Refund
        | Permission::PriceOverride
        | Permission::DrawerOpenNoSale
        | Permission::ApproveOverride => Role::Supervisor,
        Permission::EnrollClerk
        | Permission::RemoveClerk
        | Permission::DisableClerk
        | Permission::ResetLockout
        | Permission::RotateTotp
        | Permission::CacheAdmin
        | Permission::ViewAudit => Role::Admin,
        Permission::SetLockdown | Permission::ClearLockdown => Role::SuperAdmin,
    }
}

/// Whether `role` may do `perm`.
pub fn allows(role: Role, perm: Permission) -> bool {
    role >= lowest_role(perm)
}

/// The permissions `role` holds, in table order.
pub fn permissions(role: Role) -> impl Iterator<Item = Permission> {
    Permission::ALL
        .into_iter()
        .filter(move |p| allows(role, *p))
}

/// Whether logging in as `role` always needs a TOTP code (DESIGN.md: Admin and SuperAdmin).
pub fn mfa_mandatory(role: Role) -> bool {
    role >= Role::Admin
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission as P;

    /// The table, written out in full: a change to [`lowest_role`] must change this test too.
    const EXPECTED: [(Permission, [bool; 4]); 14] = [
        // permission            Clerk  Superv Admin  SuperA
        (P::Sell, [true, true, true, true]),
        (P::Refund, [false, true, true, true]),
        (P::PriceOverride, [false, true, true, true]),
        (P::DrawerOpenNoSale, [false, true, true, true]),
        (P::ApproveOverride, [false, true, true, true]),
        (P::EnrollClerk, [false, false, true, true]),
        (P::RemoveClerk, [false, false, true, true]),
        (P::DisableClerk, [false, false, true, true]),
        (P::ResetLockout, [false, false, true, true]),
        (P::SetLockdown, [false, false, false, true]),
        (P::ClearLockdown, [false, false, false, true]),
        (P::RotateTotp, [false, false, true, true]),
        (P::CacheAdmin, [false, false, true, true]),
        (P::ViewAudit, [false, false, true, true]),
    ];

    #[test]
    fn table_is_exactly_as_written() {
        for (perm, row) in EXPECTED {
            for (role, want) in ALL_ROLES.into_iter().zip(row) {
                assert_eq!(allows(role, perm), want, "{role:?} {perm:?}");
            }
        }
        let listed: Vec<_> = EXPECTED.iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, Permission::ALL.to_vec());
    }

    #[test]
    fn clerk_only_sells_and_superadmin_does_everything() {
        assert_eq!(permissions(Role::Clerk).collect::<Vec<_>>(), vec![P::Sell]);
        assert_eq!(permissions(Role::SuperAdmin).count(), Permission::ALL.len());
        assert!(!allows(Role::Admin, P::SetLockdown));
        assert!(mfa_mandatory(Role::Admin) && !mfa_mandatory(Role::Supervisor));
    }
}
