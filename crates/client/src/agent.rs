//! The agent's Redis front: serves RESP2 for one [`Kv`] on a listener (loopback by design:
//! the agent is the user's own process, and the link to it is not encrypted).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::kv::Kv;
use crate::mailbox::Mailbox;
use crate::resp::{Parsed, encode, execute_with_mail, parse};

/// Local connections served at once.
pub const MAX_LOCAL_CONNECTIONS: usize = 256;

/// Serves `kv` over RESP on `listener` until `shutdown`.
pub async fn serve(
    kv: Kv,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with_mail(kv, None, listener, shutdown).await
}

/// [`serve`], with the `MAIL.*` commands answered by `mail`.
pub async fn serve_with_mail(
    kv: Kv,
    mail: Option<Mailbox>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_LOCAL_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r?,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut s = stream;
            let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
            continue;
        };
        let (kv, mail) = (kv.clone(), mail.clone());
        tasks.spawn(async move {
            let _ = connection(kv, mail, stream).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    Ok(())
}

async fn connection(kv: Kv, mail: Option<Mailbox>, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Answer every complete command in the buffer (pipelining), then read more.
        loop {
            match parse(&buf) {
                Parsed::Command(args, used) => {
                    buf.drain(..used);
                    let (reply, close) = execute_with_mail(&kv, mail.as_ref(), args).await;
                    stream.write_all(&encode(&reply)).await?;
                    if close {
                        return Ok(());
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Invalid(msg) => {
                    stream.write_all(format!("-{msg}\r\n").as_bytes()).await?;
                    return Ok(());
                }
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
