//! The accept loop both servers (storage and the proxy) share: accept until shutdown, set
//! TCP_NODELAY, take a connection permit in accept order (or none when at the limit: the
//! connection is then served only a refusal), and run each connection as a task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Accepts on `listener` until `shutdown`, with at most `max` connections holding a permit;
/// `serve` gets each stream, its peer and its permit (`None`: refuse it). Returns the set of
/// connection tasks still running, for the caller to abort or detach.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    max: usize,
    shutdown: impl Future<Output = ()>,
    mut serve: F,
) -> JoinSet<()>
where
    F: FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = permits.clone().try_acquire_owned().ok();
        tasks.spawn(serve(stream, peer, permit));
        while tasks.try_join_next().is_some() {}
    }
    tasks
}
