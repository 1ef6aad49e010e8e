//! Stopping the long-running commands: SIGINT and SIGTERM end `shroud storage`, `proxy` and
//! `agent` within a second in every state (issue 12, item 10).
//!
//! The handlers are installed when [`shutdown`] is called, before anything slow (opening a
//! database, connecting to a proxy), so no signal is lost to the default action or swallowed
//! by a handler nobody awaits. The first signal asks for a clean stop; a second one exits at
//! once, which is safe because every state on disk is crash-safe (it is what SIGKILL does).

use std::future::Future;
use std::time::Duration;

/// How long the runtime waits for blocking work (a save, a flush) after the command returns.
pub const RUNTIME_GRACE: Duration = Duration::from_millis(200);

/// Takes SIGINT and SIGTERM from now on; the future resolves on the first. Call it inside
/// the runtime.
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("signal received: shutting down");
                let _ = tx.send(());
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::warn!("second signal: exiting now");
                std::process::exit(1);
            });
        }
        _ => tracing::warn!("could not install signal handlers: SIGTERM kills without a save"),
    }
    async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a service on a fresh runtime until it returns, then gives blocking work at most
/// [`RUNTIME_GRACE`] (what is left is crash-safe: it is redone on the next start).
pub fn run<F, Fut>(service: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The service is built inside the runtime: its signal handlers need one.
    let r = rt.block_on(async { service().await });
    rt.shutdown_timeout(RUNTIME_GRACE);
    r
}
