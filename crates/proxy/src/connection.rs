//! The tokio driver of one client connection: the TLS handshake, the socket, the timeouts,
//! the reply writer and the shared epoch. Every protocol rule is the [`Session`]'s; this only
//! moves frames between the socket, the session and the epoch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::frame_codec;
use shroud_net::transport::ServerTls;
use shroud_proto::proxy::ProxyMsg;
use shroud_proto::{ErrorCode, Limits, encode};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::session::{Input, Session};
use crate::transcript::FrameKind;
use crate::{Pending, PendingMail, Shared};

pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let shape = shared.config.shape;
    let mut session = Session::new(shape);
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    let send_now = |msg: ProxyMsg| encode(&msg, Limits::default()).map(Bytes::from);
    // Over the limit: refused before any TLS handshake (whose cost is what a flood of
    // connections would buy); plain TCP still gets a typed refusal.
    let Some(_permit) = permit else {
        shared.stats.rejected.fetch_add(1, Relaxed);
        if matches!(shared.tls, ServerTls::Plain)
            && let Ok(io) = shared.tls.accept(stream, shared.config.hello_timeout).await
        {
            let mut framed = Framed::new(io, frame_codec(session.limits()));
            if let Ok(b) = send_now(ProxyMsg::Error(ErrorCode::TooManyConnections)) {
                let _ = framed.send(b).await;
            }
        }
        return;
    };
    let io = match shared.tls.accept(stream, shared.config.hello_timeout).await {
        Ok(io) => io,
        Err(e) => {
            shared.stats.rejected.fetch_add(1, Relaxed);
            tracing::debug!("client {peer}: handshake failed: {e}");
            return;
        }
    };
    let mut framed = Framed::new(io, frame_codec(session.limits()));
    // The hello.
    let first = match timeout(shared.config.hello_timeout, framed.next()).await {
        Ok(Some(Ok(f))) => {
            shared.record(conn, true, FrameKind::Hello, &f);
            match shared.difficulty().await {
                Ok(difficulty) => session.on_hello(&f, difficulty),
                Err(e) => {
                    tracing::warn!("client {peer}: storage unreachable for the hello: {e}");
                    Err(ErrorCode::Unavailable)
                }
            }
        }
        Ok(Some(Err(_))) => Err(session.on_oversized()),
        Ok(None) => return,
        Err(_) => Err(ErrorCode::Timeout),
    };
    let first = match first {
        Ok(reply) => reply,
        Err(code) => {
            shared.stats.rejected.fetch_add(1, Relaxed);
            if let Ok(b) = send_now(ProxyMsg::Error(code)) {
                let _ = framed.send(b).await;
            }
            return;
        }
    };
    let Ok(b) = send_now(first) else { return };
    shared.record(conn, false, FrameKind::Hello, &b);
    if framed.send(b).await.is_err() {
        return;
    }
    let (mut sink, mut stream) = framed.split();
    // Replies (from this task and from the epoch clock) go through one writer.
    let k = shape.slots_per_epoch as usize;
    let (tx, mut rx) = mpsc::channel::<ProxyMsg>(2 * k + 6);
    let out_shared = shared.clone();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let close = matches!(msg, ProxyMsg::Error(_));
            let Ok(b) = encode(&msg, Limits::default()) else {
                break;
            };
            out_shared.record(conn, false, FrameKind::of_reply(&msg), &b);
            if sink.send(Bytes::from(b)).await.is_err() || close {
                break;
            }
        }
    });
    let close = loop {
        let frame = match timeout(shared.config.idle_timeout, stream.next()).await {
            Err(_) => break Some(ErrorCode::Timeout),
            Ok(None) => break None,
            Ok(Some(Err(_))) => break Some(session.on_oversized()),
            Ok(Some(Ok(f))) => f,
        };
        let input = match session.on_frame(&frame) {
            Ok(input) => input,
            Err(code) => break Some(code),
        };
        let st = &shared.stats;
        let kind = match &input {
            Input::Stats => FrameKind::Stats,
            Input::Register(..) => FrameKind::Register,
            Input::Slots(_) => {
                st.slot_frame_min.fetch_min(frame.len() as u64, Relaxed);
                st.slot_frame_max.fetch_max(frame.len() as u64, Relaxed);
                FrameKind::Slot
            }
            Input::Mail(_) => {
                st.mail_frame_min.fetch_min(frame.len() as u64, Relaxed);
                st.mail_frame_max.fetch_max(frame.len() as u64, Relaxed);
                FrameKind::Mail
            }
        };
        shared.record(conn, true, kind, &frame);
        match input {
            Input::Stats => {
                let _ = tx.send(ProxyMsg::Stats(shared.stats.reply())).await;
            }
            Input::Register(grant, geometry, work) => {
                // On the registrar's own connection, never the epoch clock's.
                let r = shared
                    .registrar
                    .lock()
                    .await
                    .create(&grant, geometry, work)
                    .await;
                match r {
                    Ok(()) => {
                        // A store made again after storage refused it is welcome back.
                        shared.refused.lock().remove(&grant.store);
                        let (reply, first) = session.on_registered(grant);
                        if first {
                            shared.stats.clients.fetch_add(1, Relaxed);
                        }
                        let _ = tx.send(reply).await;
                    }
                    Err(shroud_net::conn::ConnError::Refused(code)) => break Some(code),
                    Err(e) => {
                        tracing::warn!("client {peer}: registration failed: {e}");
                        break Some(ErrorCode::Unavailable);
                    }
                }
            }
            Input::Slots(turn) => {
                let Some(first) = turn.first() else {
                    continue;
                };
                if shared.refused.lock().contains(&first.grant.store) {
                    break Some(ErrorCode::Unauthorized);
                }
                // Admitted under the epoch's lock, so the count and the epoch agree.
                let mut open = shared.open.lock();
                if let Err(code) = session.admit_slots(open.epoch, turn.len()) {
                    break Some(code);
                }
                open.slots.extend(turn.into_iter().map(|slot| Pending {
                    slot,
                    reply: tx.clone(),
                }));
            }
            Input::Mail(mail) => {
                let mut open = shared.open.lock();
                if let Err(code) = session.admit_mail(open.epoch) {
                    break Some(code);
                }
                open.mail.push(PendingMail {
                    mail,
                    reply: tx.clone(),
                });
            }
        }
    };
    if session.is_registered() {
        shared.stats.clients.fetch_sub(1, Relaxed);
    }
    if let Some(code) = close {
        shared.stats.rejected.fetch_add(1, Relaxed);
        tracing::debug!("client {peer}: closing on {code:?}");
        let _ = tx.send(ProxyMsg::Error(code)).await;
    }
    drop(tx);
    let _ = writer.await;
}
