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
use crate::{Pending, PendingRound, Shared};

pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let shape = shared.config.shape;
    let mut session = Session::new(shape);
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    // The id storage keeps this connection's PIR key under: random, so it says nothing of
    // the client, and unguessable, so no one else's queries use the key.
    let reader: [u8; 16] = rand::random();
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
            Input::Round(_) => {
                st.round_frame_min.fetch_min(frame.len() as u64, Relaxed);
                st.round_frame_max.fetch_max(frame.len() as u64, Relaxed);
                FrameKind::Round
            }
            Input::ReaderKey(_) => FrameKind::ReaderKey,
            Input::Outbox(_) => FrameKind::Outbox,
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
            Input::ReaderKey(key) => {
                // On the registrar's connection: a key is several MiB, and the epoch clock's
                // connection must never wait behind one.
                let r = shared.registrar.lock().await.keep_key(reader, key).await;
                match r {
                    Ok(()) => {
                        let _ = tx.send(session.on_key_kept()).await;
                    }
                    Err(shroud_net::conn::ConnError::Refused(code)) => break Some(code),
                    Err(e) => {
                        tracing::warn!("client {peer}: storage did not keep its key: {e}");
                        break Some(ErrorCode::Unavailable);
                    }
                }
            }
            Input::Round(frame) => {
                let (seq, round) = (frame.seq, frame.round);
                let refused = {
                    let mut open = shared.open.lock();
                    match session.admit_round(open.epoch, round) {
                        Ok(()) => {
                            open.rounds.push(PendingRound {
                                frame,
                                session: reader,
                                reply: tx.clone(),
                            });
                            None
                        }
                        Err(code) => Some(code),
                    }
                };
                if let Some(code) = refused {
                    // Told after the epoch's slot replies, like any round's outcome.
                    shared
                        .answered
                        .lock()
                        .push((tx.clone(), ProxyMsg::RoundFailed(seq, code)));
                }
            }
            Input::Outbox(sealed) => {
                let r = shared.registrar.lock().await.outbox(sealed).await;
                match r {
                    Ok(reply) => {
                        let _ = tx.send(ProxyMsg::Outbox(reply)).await;
                    }
                    Err(shroud_net::conn::ConnError::Refused(code)) => break Some(code),
                    Err(e) => {
                        tracing::warn!("client {peer}: outbox request failed: {e}");
                        break Some(ErrorCode::Unavailable);
                    }
                }
            }
        }
    };
    if session.is_registered() {
        shared.stats.clients.fetch_sub(1, Relaxed);
    }
    if session.has_key() {
        // Storage forgets the key when its connection ends (best effort: a key left behind
        // by a failed request is gone when storage restarts).
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.registrar.lock().await.forget_key(reader).await {
                tracing::debug!("storage did not forget a reader key: {e}");
            }
        });
    }
    if let Some(code) = close {
        shared.stats.rejected.fetch_add(1, Relaxed);
        tracing::debug!("client {peer}: closing on {code:?}");
        let _ = tx.send(ProxyMsg::Error(code)).await;
    }
    drop(tx);
    let _ = writer.await;
}
