//! The agent's Redis front: serves RESP2 for one [`Kv`] on a listener (loopback by design:
//! the agent is the user's own process, and the link to it is not encrypted). With an
//! [`AccessToken`], a connection must `AUTH` with it before anything else (other local users
//! reach loopback too); until then every command but `AUTH` and `QUIT` gets `-NOAUTH`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::kv::Kv;
use crate::mailbox::Mailbox;
use crate::resp::{Parsed, encode, execute_with_mail, parse};
use crate::token::AccessToken;
use redis_protocol::resp2::types::OwnedFrame;

/// Local connections served at once.
pub const MAX_LOCAL_CONNECTIONS: usize = 256;

/// Serves `kv` over RESP on `listener` until `shutdown`, to connections that present
/// `token` (to every connection without one: tests and the in-process demo).
pub async fn serve(
    kv: Kv,
    listener: TcpListener,
    token: Option<AccessToken>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with_mail(kv, None, listener, token, shutdown).await
}

/// [`serve`], with the `MAIL.*` commands answered by `mail`.
pub async fn serve_with_mail(
    kv: Kv,
    mail: Option<Mailbox>,
    listener: TcpListener,
    token: Option<AccessToken>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let token = token.map(Arc::new);
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
        let (kv, mail, token) = (kv.clone(), mail.clone(), token.clone());
        tasks.spawn(async move {
            let _ = connection(kv, mail, token, stream).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    Ok(())
}

/// What `AUTH` (Redis: `AUTH password` or `AUTH default password`) makes of a connection.
fn authenticate(token: &AccessToken, args: &[Vec<u8>]) -> (OwnedFrame, bool) {
    let presented = match args {
        [_, pass] => pass,
        [_, user, pass] if user.eq_ignore_ascii_case(b"default") => pass,
        [_, _, _] => {
            return (wrong_pass(), false);
        }
        _ => {
            return (
                OwnedFrame::Error("ERR wrong number of arguments for 'auth' command".into()),
                false,
            );
        }
    };
    if token.matches(presented) {
        (OwnedFrame::SimpleString(b"OK".to_vec()), true)
    } else {
        (wrong_pass(), false)
    }
}

fn wrong_pass() -> OwnedFrame {
    OwnedFrame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// The answer to a command before `AUTH`: `AUTH` itself, `QUIT`, or `-NOAUTH`.
fn before_auth(token: &AccessToken, args: &[Vec<u8>]) -> (OwnedFrame, bool, bool) {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match name.as_slice() {
        b"AUTH" => {
            let (reply, ok) = authenticate(token, args);
            (reply, ok, false)
        }
        b"QUIT" => (OwnedFrame::SimpleString(b"OK".to_vec()), false, true),
        _ => (
            OwnedFrame::Error("NOAUTH Authentication required.".into()),
            false,
            false,
        ),
    }
}

async fn connection(
    kv: Kv,
    mail: Option<Mailbox>,
    token: Option<Arc<AccessToken>>,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut authed = token.is_none();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Answer every complete command in the buffer (pipelining), then read more.
        loop {
            match parse(&buf) {
                Parsed::Command(args, used) => {
                    buf.drain(..used);
                    let (reply, close) = match &token {
                        Some(t) if !authed => {
                            let (reply, ok, close) = before_auth(t, &args);
                            authed = ok;
                            (reply, close)
                        }
                        Some(t)
                            if args
                                .first()
                                .is_some_and(|a| a.eq_ignore_ascii_case(b"AUTH")) =>
                        {
                            (authenticate(t, &args).0, false)
                        }
                        _ => execute_with_mail(&kv, mail.as_ref(), args).await,
                    };
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
