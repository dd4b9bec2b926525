//! The agent daemon: opens the secure element and the journal, serves the local API, and on
//! SIGTERM/SIGINT stops serving, journals its stop, gives the uplink one bounded attempt to
//! ship it, and closes the journal with a checkpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use posguard_hal::{Backend, KeyMode};
use posguard_proto::event::{Actor, Event, EventKind, KeyBackend, StopReason, TamperFinding};
use posguard_proto::text::{SafeText, ShortCode};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AgentContext};
use crate::clerks::Clerks;
use crate::clock::Clock;
use crate::config::AgentConfig;
use crate::datakey::DataKey;
use crate::journal::Journal;
use crate::storeguard::MovedAside;

/// Runs the agent until `shutdown` completes. `ready` is called once the identity, the journal
/// and the socket are up (systemd's READY=1).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let clock = Clock::system();
    let device_id = config.device_id();
    let se_config = config.secure_element.clone();
    let element = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let element = posguard_hal::open(&se_config)?;
        element
            .ensure_identity_key(KeyMode::OpenExisting)
            .context("device identity key")?;
        Ok(element)
    })
    .await??;
    let backend = element.info();

    let journal_config = config.journal.clone();
    let (journal, report) = {
        let (element, device_id) = (element.clone(), device_id.clone());
        tokio::task::spawn_blocking(move || {
            Journal::open(&journal_config, device_id, element, clock)
        })
        .await?
        .context("opening the audit journal")?
    };
    if let Some(finding) = &report.finding {
        tracing::error!(%finding, moved_to = ?report.moved_to, "the journal was tampered with or rolled back; running on a fresh store");
    }
    let version =
        ShortCode::new(env!("CARGO_PKG_VERSION")).context("agent version as a short code")?;
    let key_backend = match backend.kind {
        Backend::Tpm => KeyBackend::Tpm,
        _ => KeyBackend::Software,
    };
    journal
        .append(Event::new(
            clock.stamp(),
            Actor::System,
            None,
            EventKind::AgentStarted {
                version,
                backend: key_backend,
            },
        ))
        .await?;

    let state_dir = config.storage.dir.clone();
    let (datakey, datakey_moved) = {
        let element = element.clone();
        let dir = state_dir.clone();
        tokio::task::spawn_blocking(move || DataKey::load_or_replace(element.as_ref(), &dir))
            .await?
            .context("unsealing the data key")?
    };
    let datakey = Arc::new(datakey);
    let clerks = {
        let (dir, auth, dk, j) = (
            state_dir.clone(),
            config.auth,
            datakey.clone(),
            journal.clone(),
        );
        let clerks = tokio::task::spawn_blocking(move || Clerks::open(&dir, auth, dk, j, clock))
            .await?
            .context("opening the clerk database")?;
        Arc::new(clerks)
    };

    let cache = {
        let (element, dir, cc) = (element.clone(), state_dir.clone(), config.cache.clone());
        let audit = Arc::new(crate::cache::JournalAudit::new(journal.clone(), clock));
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let keyring = crate::datakey::Keyring::open(element, &dir)
                .context("unsealing the cache's data keys")?;
            let moved = keyring.moved_aside().to_vec();
            let cache = crate::cache::Cache::open(&cc, keyring, audit)
                .context("opening the transaction cache")?;
            Ok((cache, moved))
        })
        .await??
    };
    let (cache, keys_moved) = cache;
    let recovered: Vec<MovedAside> = datakey_moved
        .into_iter()
        .chain(keys_moved)
        .chain(clerks.recovered().cloned())
        .chain(cache.recovered().cloned())
        .collect();
    for moved in &recovered {
        journal_recovery(&journal, clock, moved).await?;
    }
    // The stores' anchors against the journal's record of them (deleted, replaced, older
    // copy), then a checkpoint so that the record is current from this start on.
    journal
        .watch_store(
            "clerks",
            clerks.anchor(),
            clerks.recovered().is_some(),
            clock,
        )
        .await
        .context("checking the clerk store's anchor")?;
    journal
        .watch_store("cache", cache.anchor(), cache.recovered().is_some(), clock)
        .await
        .context("checking the cache's anchor")?;
    journal
        .checkpoint()
        .await
        .context("recording the stores' anchors")?;
    {
        // Each store now records the journal's head; sync once so that it is current even if
        // nothing else is written to the store in this run.
        let (clerks, cache) = (clerks.clone(), cache.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            clerks.sync_anchor().context("syncing the clerk store")?;
            cache.sync_anchor().context("syncing the cache")?;
            Ok(())
        })
        .await??;
    }
    let tail = report.start_tail;
    // After a recovery the finding says more (the copied prefix carries no checkpoint).
    if (tail.unanchored > 0 || !tail.clean_stop) && report.finding.is_none() {
        tracing::warn!(
            head = tail.head_seq,
            anchored = tail.anchored_seq,
            unanchored = tail.unanchored,
            "the previous run stopped without a final checkpoint: records after the last checkpoint were not TPM-anchored, and a cut there cannot be seen locally"
        );
    }
    let uplink_stats = config
        .uplink
        .as_ref()
        .map(|_| Arc::new(crate::uplink::UplinkStats::default()));
    let listener = api::bind(&config.api.socket, config.api.socket_mode).with_context(|| {
        format!(
            "binding the local API socket {}",
            config.api.socket.display()
        )
    })?;
    let ctx = Arc::new(AgentContext {
        device_id,
        journal: journal.clone(),
        backend,
        clock,
        started: Instant::now(),
        api: config.api.clone(),
        clerks: clerks.clone(),
        cache: cache.clone(),
        uplink: uplink_stats.clone(),
        recovered,
    });
    let stop = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, ctx, stop.clone()));
    let cache_task = crate::cache::spawn_background(cache.clone(), stop.clone());
    let sweeper = {
        let (clerks, stop) = (clerks.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = clerks.sweep().await {
                            tracing::error!(error = ?e, "session sweep failed");
                        }
                    }
                }
            }
        })
    };
    // The uplink stops last, after the stop is journaled, so that it can ship that record.
    let uplink_stop = CancellationToken::new();
    let uplink = match (&config.uplink, &uplink_stats) {
        (Some(uplink_config), Some(stats)) => Some(crate::uplink::spawn(
            crate::uplink::UplinkDeps {
                config: uplink_config.clone(),
                journal: journal.clone(),
                element: element.clone(),
                clerks: clerks.clone(),
                clock,
                stats: stats.clone(),
            },
            uplink_stop.clone(),
        )?),
        _ => None,
    };
    tracing::info!(socket = %config.api.socket.display(), head = report.head_seq, "posguard agent ready");
    ready();

    shutdown.await;
    tracing::info!("stopping");
    stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    let _ = sweeper.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), cache_task).await;
    let _ = std::fs::remove_file(&config.api.socket);
    let stop_event = || {
        Event::new(
            clock.stamp(),
            Actor::System,
            None,
            EventKind::AgentStopped {
                reason: StopReason::Shutdown,
            },
        )
    };
    let stopped = journal.append(stop_event()).await;
    // Only now: the uplink makes one bounded attempt (crate::uplink::FINAL_FLUSH) to ship what
    // is left, the stop record included, so that the collector tells a terminal stopped on
    // purpose from one that lost power. Joined even if the append failed.
    uplink_stop.cancel();
    if let Some(handle) = uplink {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    let mut stop_seq = stopped?;
    // A clean stop ends with its stop record (docs/journal.md): if anything was journaled after
    // it (by the uplink's last attempt: a finding, a declared overflow), the stop is recorded
    // again so that the next start does not take this stop for a cut. Bounded: the uplink is
    // stopped, so at most an overflow declaration can follow a stop record.
    for _ in 0..3 {
        match journal.status().await {
            Ok(s) if s.head_seq > stop_seq => stop_seq = journal.append(stop_event()).await?,
            _ => break,
        }
    }
    journal.shutdown().await?;
    Ok(())
}

/// Journals a store that was unreadable at start and moved aside: a signed, critical
/// `tamper_recovered` record, durable before the agent serves.
async fn journal_recovery(
    journal: &Journal,
    clock: Clock,
    moved: &MovedAside,
) -> anyhow::Result<()> {
    let store = ShortCode::new(moved.store).context("store name as a short code")?;
    let moved_to = SafeText::new(moved.moved_to.display().to_string()).ok();
    journal
        .append(Event::new(
            clock.stamp(),
            Actor::System,
            None,
            EventKind::TamperRecovered {
                finding: TamperFinding::UnreadableDatabase { store },
                moved_to,
            },
        ))
        .await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
