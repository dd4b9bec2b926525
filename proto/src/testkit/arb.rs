//! proptest strategies for every event type.

use proptest::prelude::*;

use crate::event::*;
use crate::text::{ClerkId, Currency, SafeText, ShortCode};

pub(crate) fn clerk() -> impl Strategy<Value = ClerkId> {
    "[A-Za-z0-9._-]{1,64}".prop_filter_map("digit run", |s| ClerkId::new(s).ok())
}

pub(crate) fn safe_text() -> impl Strategy<Value = SafeText> {
    "[ -~]{1,256}".prop_filter_map("digit run", |s| SafeText::new(s).ok())
}

pub(crate) fn code() -> impl Strategy<Value = ShortCode> {
    "[A-Za-z0-9._-]{1,32}".prop_filter_map("digit run", |s| ShortCode::new(s).ok())
}

fn currency() -> impl Strategy<Value = Currency> {
    "[A-Z]{3}".prop_map(|s| Currency::new(s).unwrap())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Clerk),
        Just(Role::Supervisor),
        Just(Role::Admin),
        Just(Role::SuperAdmin)
    ]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![Just(Source::Local), Just(Source::Collector)]
}

fn login_failure() -> impl Strategy<Value = LoginFailure> {
    prop_oneof![
        Just(LoginFailure::UnknownClerk),
        Just(LoginFailure::BadSecret),
        Just(LoginFailure::MfaMissing),
        Just(LoginFailure::LockedOut),
        Just(LoginFailure::Disabled),
        Just(LoginFailure::OutsideAllowedHours),
        Just(LoginFailure::Lockdown),
        Just(LoginFailure::Throttled),
    ]
}

fn command() -> impl Strategy<Value = CommandRef> {
    let kind = prop_oneof![
        Just(CommandKind::Lockdown),
        Just(CommandKind::Unlock),
        Just(CommandKind::PolicyUpdate),
        code().prop_map(CommandKind::Other),
    ];
    (any::<u64>(), kind).prop_map(|(command_seq, kind)| CommandRef { command_seq, kind })
}

fn refusal() -> impl Strategy<Value = CommandRefusal> {
    prop_oneof![
        Just(CommandRefusal::Malformed),
        Just(CommandRefusal::BadSignature),
        Just(CommandRefusal::WrongDevice),
        Just(CommandRefusal::Expired),
        Just(CommandRefusal::Replayed),
        Just(CommandRefusal::Unsupported),
    ]
}

fn finding() -> impl Strategy<Value = TamperFinding> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(stored_counter, tpm_counter)| {
            TamperFinding::Rollback {
                stored_counter,
                tpm_counter,
            }
        }),
        any::<u64>().prop_map(|seq| TamperFinding::BrokenChain { seq }),
        code().prop_map(|store| TamperFinding::UnreadableDatabase { store }),
        code().prop_map(TamperFinding::Other),
        code().prop_map(|store| TamperFinding::StoreMissing { store }),
        code().prop_map(|store| TamperFinding::StoreReplaced { store }),
        (code(), any::<u64>(), any::<u64>()).prop_map(
            |(store, recorded_generation, found_generation)| TamperFinding::StoreOlder {
                store,
                recorded_generation,
                found_generation,
            }
        ),
    ]
}

fn pos() -> impl Strategy<Value = PosEvent> {
    let action = prop_oneof![
        Just(PosAction::Refund),
        Just(PosAction::DrawerOpen),
        Just(PosAction::PriceOverride),
        Just(PosAction::Void),
        Just(PosAction::NoSale),
        code().prop_map(PosAction::Other),
    ];
    let money = (0..=MinorUnits::MAX, currency()).prop_map(|(m, currency)| Money {
        minor: MinorUnits::new(m).unwrap(),
        currency,
    });
    (
        action,
        proptest::option::of(money),
        proptest::option::of(safe_text()),
    )
        .prop_map(|(action, amount, reference)| PosEvent {
            action,
            amount,
            reference,
        })
}

pub(crate) fn kind() -> impl Strategy<Value = EventKind> {
    use EventKind as K;
    let scope = prop_oneof![
        clerk().prop_map(ThrottleScope::Clerk),
        Just(ThrottleScope::Terminal)
    ];
    let limit = prop_oneof![Just(SessionLimit::Idle), Just(SessionLimit::Absolute)];
    let backend = prop_oneof![Just(KeyBackend::Tpm), Just(KeyBackend::Software)];
    let stop = prop_oneof![Just(StopReason::Shutdown), Just(StopReason::Fatal)];
    let opt_ms = proptest::option::of(any::<u64>());
    prop_oneof![
        (code(), backend).prop_map(|(version, backend)| K::AgentStarted { version, backend }),
        stop.prop_map(|reason| K::AgentStopped { reason }),
        (clerk(), role(), any::<bool>()).prop_map(|(clerk, role, mfa)| K::LoginSucceeded {
            clerk,
            role,
            mfa
        }),
        (proptest::option::of(clerk()), login_failure())
            .prop_map(|(clerk, reason)| K::LoginFailed { clerk, reason }),
        clerk().prop_map(|clerk| K::MfaFailed { clerk }),
        (clerk(), any::<u64>()).prop_map(|(clerk, time_step)| K::MfaReplayed { clerk, time_step }),
        (scope, any::<u32>(), any::<u64>()).prop_map(|(scope, failures, delay_ms)| K::Throttled {
            scope,
            failures,
            delay_ms
        }),
        (clerk(), any::<u32>(), opt_ms.clone()).prop_map(|(clerk, failures, until_wall_ms)| {
            K::LockedOut {
                clerk,
                failures,
                until_wall_ms,
            }
        }),
        (any::<u32>(), any::<u32>(), opt_ms).prop_map(|(failures, window_s, until_wall_ms)| {
            K::FailureBudgetExceeded {
                failures,
                window_s,
                until_wall_ms,
            }
        }),
        proptest::option::of(clerk()).prop_map(|clerk| K::LockoutReset { clerk }),
        (clerk(), limit).prop_map(|(clerk, limit)| K::SessionExpired { clerk, limit }),
        clerk().prop_map(|clerk| K::LoggedOut { clerk }),
        (clerk(), clerk(), role(), proptest::option::of(code())).prop_map(
            |(approver, subject, role, purpose)| K::PrivilegeElevated {
                approver,
                subject,
                role,
                purpose
            }
        ),
        (clerk(), role(), any::<bool>()).prop_map(|(clerk, role, mfa)| K::ClerkEnrolled {
            clerk,
            role,
            mfa
        }),
        clerk().prop_map(|clerk| K::ClerkRemoved { clerk }),
        clerk().prop_map(|clerk| K::ClerkDisabled { clerk }),
        clerk().prop_map(|clerk| K::ClerkEnabled { clerk }),
        clerk().prop_map(|clerk| K::TotpSeedRotated { clerk }),
        (source(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(source, version, digest)| {
            K::PolicyChanged {
                source,
                version,
                digest,
            }
        }),
        (any::<[u8; 32]>(), proptest::option::of(safe_text()))
            .prop_map(|(digest, note)| K::ConfigChanged { digest, note }),
        (any::<bool>(), source())
            .prop_map(|(enabled, source)| K::LockdownChanged { enabled, source }),
        command().prop_map(|command| K::CommandReceived { command }),
        command().prop_map(|command| K::CommandApplied { command }),
        (proptest::option::of(command()), refusal())
            .prop_map(|(command, reason)| K::CommandRefused { command, reason }),
        clerk().prop_map(|clerk| K::HoneypotTriggered { clerk }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| {
            K::JournalOverflow(Overflow {
                first_seq: a,
                last_seq: b,
                dropped: c,
                dropped_critical: d,
            })
        }),
        finding().prop_map(|finding| K::TamperDetected { finding }),
        (finding(), proptest::option::of(safe_text()))
            .prop_map(|(finding, moved_to)| K::TamperRecovered { finding, moved_to }),
        Just(K::CacheRecordRefused {
            reason: CacheRefusal::CardData
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(purged, remaining)| K::CachePurged { purged, remaining }),
        pos().prop_map(K::Pos),
    ]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        clerk().prop_map(Actor::Clerk),
        Just(Actor::System),
        Just(Actor::Collector)
    ]
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Info),
        Just(Severity::Notice),
        Just(Severity::Warning),
        Just(Severity::Critical)
    ]
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    let stamp =
        (any::<u64>(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(wall_ms, mono_ns, boot_id)| {
            Stamp {
                wall_ms,
                mono_ns,
                boot_id,
            }
        });
    let peer = proptest::option::of(
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(uid, gid, pid)| PeerCred {
            uid,
            gid,
            pid,
        }),
    );
    (stamp, actor(), peer, severity(), kind()).prop_map(|(stamp, actor, peer, severity, kind)| {
        Event {
            stamp,
            actor,
            peer,
            severity,
            kind,
        }
    })
}
