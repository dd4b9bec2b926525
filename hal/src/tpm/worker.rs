//! The one thread that owns the ESYS context. Callers send closures over a channel and wait
//! for the answer; the thread ends when the last [`Worker`] handle is dropped.

use std::str::FromStr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tss_esapi::Context;
use tss_esapi::handles::{KeyHandle, NvIndexHandle};
use tss_esapi::tcti_ldr::TctiNameConf;

use crate::{HalError, SecureElementConfig};

type Job = Box<dyn FnOnce(&mut TpmState) + Send>;

/// The context and what the worker has learnt about the TPM's objects.
pub(crate) struct TpmState {
    pub(crate) ctx: Context,
    pub(crate) srk_handle: u32,
    pub(crate) identity_handle: u32,
    pub(crate) counter_index: u32,
    /// The storage root key, once found or created.
    pub(crate) srk: Option<KeyHandle>,
    /// The device identity key, once opened.
    pub(crate) identity: Option<KeyHandle>,
    /// A new identity key loaded beside the stored one (provisioning `--force`), with its public
    /// area, until it is committed to the identity handle. Flushed with the context otherwise.
    pub(crate) staged: Option<(KeyHandle, tss_esapi::structures::Public)>,
    /// The NV counter index, once opened.
    pub(crate) counter: Option<NvIndexHandle>,
}

impl TpmState {
    pub(crate) fn describe(&mut self) -> String {
        match tss_esapi::utils::get_tpm_vendor(&mut self.ctx) {
            Ok(vendor) => format!("TPM 2.0, vendor {}", vendor.trim()),
            Err(_) => "TPM 2.0".to_owned(),
        }
    }
}

/// Handle to the worker thread. Sending jobs is serialised by the channel.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    /// Told when the thread has closed its TPM context: dropping the worker waits for it, so
    /// that the process never exits while the tss2 libraries are finalising on that thread
    /// (a race that aborted `posguard-provision` with "double free or corruption" at exit).
    done: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; then it drops its context.
        self.jobs.take();
        let done = match self.done.get_mut() {
            Ok(d) => d.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(done) = done {
            // Bounded: a thread stuck in a TPM call must not hang the caller's exit.
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Worker {
    /// Starts the thread, which opens the context. Waits at most `timeout` for it to answer.
    pub(crate) fn spawn(config: &SecureElementConfig, timeout: Duration) -> Result<Self, HalError> {
        let tcti = config.tcti.clone();
        let conf = TctiNameConf::from_str(&tcti).map_err(|e| HalError::BadTcti {
            tcti: tcti.clone(),
            detail: e.to_string(),
        })?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), HalError>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (srk_handle, identity_handle, counter_index) = (
            config.srk_handle,
            config.identity_handle,
            config.counter_index,
        );
        let thread_tcti = tcti.clone();
        thread::Builder::new()
            .name("posguard-tpm".to_owned())
            .spawn(move || {
                let ctx = match Context::new(conf) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(HalError::Unreachable {
                            tcti: thread_tcti,
                            detail: e.to_string(),
                        }));
                        return;
                    }
                };
                let mut state = TpmState {
                    ctx,
                    srk_handle,
                    identity_handle,
                    counter_index,
                    srk: None,
                    identity: None,
                    staged: None,
                    counter: None,
                };
                // Prove that a TPM answers before saying we are ready.
                if let Err(e) = state.ctx.get_random(1) {
                    let _ = ready_tx.send(Err(HalError::Unreachable {
                        tcti: thread_tcti,
                        detail: format!("connected, but the TPM did not answer: {e}"),
                    }));
                    return;
                }
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
                drop(state);
                let _ = done_tx.send(());
            })
            .map_err(|e| HalError::Unexpected {
                operation: "open",
                detail: format!("cannot start the TPM thread: {e}"),
            })?;
        match ready_rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(Worker {
                jobs: Some(jobs),
                done: std::sync::Mutex::new(Some(done_rx)),
            }),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(HalError::Unreachable {
                tcti,
                detail: format!("no answer within {} s", timeout.as_secs()),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(HalError::WorkerGone),
        }
    }

    /// Runs `f` on the worker thread and waits for its result.
    pub(crate) fn call<R, F>(&self, f: F) -> Result<R, HalError>
    where
        R: Send + 'static,
        F: FnOnce(&mut TpmState) -> Result<R, HalError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or(HalError::WorkerGone)?
            .send(Box::new(move |state: &mut TpmState| {
                let _ = tx.send(f(state));
            }))
            .map_err(|_| HalError::WorkerGone)?;
        rx.recv().map_err(|_| HalError::WorkerGone)?
    }
}
