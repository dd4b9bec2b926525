//! `serve`: everything is read and validated before anything is bound; then the HTTPS and
//! metrics listeners, the CRL watcher and the silent-terminal sweep run until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::clock::{SystemClock, WallClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, AppState};
use crate::store::StoreHandle;
use crate::tls::{TlsFiles, TlsReloader};

pub(super) fn serve(config: &Config) -> anyhow::Result<()> {
    let (reloader, tls) = TlsReloader::new(TlsFiles::from_config(config))?;
    let ca = super::pki::load_ca(config).map_err(|e| super::usage(format!("{e:#}")))?;
    if ca.is_none() {
        tracing::info!("ca_cert/ca_key not set: /v1/enroll and /v1/renew answer 503");
    }
    // Held until the process exits: `restore` refuses to replace the store under us.
    let _lock = crate::lock::StoreLock::try_acquire(&config.store)?;
    let store = super::create_or_open_store(config)?;
    // WAL checkpoints (copying pages into the database and its fsync) off the ingest path.
    store
        .leave_checkpoints_to_background()
        .context("cannot configure the store's WAL checkpoints")?;
    store
        .keep_temporary_files_in_memory()
        .context("cannot configure the store's temporary files")?;
    crate::store::sqlite::Checkpointer::open(&config.store)
        .context("cannot open the store for WAL checkpoints")?
        .spawn(
            config.store.display().to_string(),
            Duration::from_millis(250),
        )
        .context("cannot start the background WAL checkpointer")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let store = StoreHandle::spawn(Box::new(store)).context("cannot start the store thread")?;
        let metrics = Arc::new(
            Metrics::default()
                .with_attempts(reloader.attempts())
                .with_fleet(crate::metrics::Fleet::new(
                    &config.store,
                    Duration::from_secs(config.silent_after_s),
                )),
        );
        let clock: Arc<dyn WallClock> = Arc::new(SystemClock);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot bind listen = {}", config.listen))?;
        let stop = CancellationToken::new();
        if let Some(addr) = config.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind metrics_listen = {addr}"))?;
            let s = stop.clone();
            tokio::spawn(server::plain::run_metrics(l, metrics.clone(), async move {
                s.cancelled().await;
            }));
        }
        tokio::spawn(crate::revocation::run_reports(
            reloader.attempts(),
            store.clone(),
            metrics.clone(),
            clock.clone(),
            stop.clone(),
        ));
        let state = AppState::new(config, store.clone(), metrics.clone(), clock.clone())
            .with_ca(ca)
            .with_revocation(&reloader);
        tokio::spawn(reloader.run(crate::tls::CRL_POLL, stop.clone()));
        let silent_after = Duration::from_secs(config.silent_after_s);
        tokio::spawn(server::sweep::run_sweeps(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            silent_after,
            (silent_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            config.maintenance_file.clone(),
            stop.clone(),
        ));
        let state = Arc::new(state);
        tracing::info!(listen = %config.listen, "posguard-collector serving");
        server::run(listener, state, tls, shutdown_signal()).await;
        stop.cancel();
        tracing::info!("posguard-collector stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
