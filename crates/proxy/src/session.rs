//! One client connection: handshake, hello, registration, and its K slots per epoch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::frame_codec;
use shroud_proto::Shape;
use shroud_proto::mail::DRAIN_REQUEST_LEN;
use shroud_proto::proxy::{ClientMsg, MailSlot, ProxyMsg, Slot};
use shroud_proto::{
    ErrorCode, Geometry, Grant, Hello, Limits, MAGIC, PROTOCOL_VERSION, decode, encode,
};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::{Pending, PendingMail, Shared};

/// The largest frame a client may send: one slot or one mail slot of this shape, with room
/// to spare.
fn client_limits(shape: &Shape) -> Limits {
    let slot = shape.path_len as usize * (16 + 8 + shape.bucket_len as usize)
        + shape.path_len as usize * 8;
    let mail =
        shape.deposits_per_epoch as usize * (8 + shape.envelope_len as usize) + DRAIN_REQUEST_LEN;
    Limits {
        max_frame: slot.max(mail) + 4096,
    }
}

/// Checks that a mail slot has exactly the shape's counts and sizes.
fn mail_fits(mail: &MailSlot, shape: &Shape) -> bool {
    shape.mail()
        && mail.deposits.len() == shape.deposits_per_epoch as usize
        && mail
            .deposits
            .iter()
            .all(|e| e.0.len() == shape.envelope_len as usize)
        && mail.drain.0.len() == DRAIN_REQUEST_LEN
}

/// Checks that a slot has exactly the shape's sizes and stays inside the store.
fn fits(slot: &Slot, shape: &Shape) -> bool {
    let n = shape.path_len as usize;
    slot.writes.len() == n
        && slot.reads.len() == n
        && slot
            .writes
            .iter()
            .all(|w| w.data.len() == shape.bucket_len as usize && w.bucket < shape.buckets)
        && slot.reads.iter().all(|&b| b < shape.buckets)
}

fn msg_kind(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello(_) => "hello",
        ClientMsg::Register(_) => "register",
        ClientMsg::Slot(_) => "slot",
        ClientMsg::Mail(_) => "mail",
        ClientMsg::Stats => "stats",
    }
}

fn reply_kind(m: &ProxyMsg) -> &'static str {
    match m {
        ProxyMsg::Hello(..) => "hello",
        ProxyMsg::Registered => "registered",
        ProxyMsg::Done(_) => "done",
        ProxyMsg::Failed(..) => "failed",
        ProxyMsg::MailDone(_) => "mail-done",
        ProxyMsg::MailFailed(..) => "mail-failed",
        ProxyMsg::Stats(_) => "stats",
        ProxyMsg::Error(_) => "error",
    }
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let shape = shared.config.shape;
    let limits = client_limits(&shape);
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    let io = match shared.tls.accept(stream, shared.config.hello_timeout).await {
        Ok(io) => io,
        Err(e) => {
            shared.stats.rejected.fetch_add(1, Relaxed);
            tracing::debug!("client {peer}: handshake failed: {e}");
            return;
        }
    };
    let mut framed = Framed::new(io, frame_codec(limits));
    let send_now = |msg: ProxyMsg| encode(&msg, Limits::default()).map(Bytes::from);
    let Some(_permit) = permit else {
        shared.stats.rejected.fetch_add(1, Relaxed);
        if let Ok(b) = send_now(ProxyMsg::Error(ErrorCode::TooManyConnections)) {
            let _ = framed.send(b).await;
        }
        return;
    };
    // The hello.
    let hello = match timeout(shared.config.hello_timeout, framed.next()).await {
        Ok(Some(Ok(f))) => match decode::<ClientMsg>(&f, limits) {
            Ok(ClientMsg::Hello(h)) if h.magic == MAGIC && h.version == PROTOCOL_VERSION => Ok(()),
            Ok(ClientMsg::Hello(h)) if h.magic == MAGIC => Err(ErrorCode::UnsupportedVersion),
            Ok(ClientMsg::Hello(_)) => Err(ErrorCode::UnexpectedHello),
            Ok(_) => Err(ErrorCode::HelloRequired),
            Err(_) => Err(ErrorCode::Malformed),
        },
        Ok(Some(Err(_))) => Err(ErrorCode::TooLarge),
        Ok(None) => return,
        Err(_) => Err(ErrorCode::Timeout),
    };
    let first = match hello {
        Ok(()) => ProxyMsg::Hello(Hello::current(), shape),
        Err(code) => {
            shared.stats.rejected.fetch_add(1, Relaxed);
            if let Ok(b) = send_now(ProxyMsg::Error(code)) {
                let _ = framed.send(b).await;
            }
            return;
        }
    };
    let Ok(b) = send_now(first) else { return };
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
            out_shared.record(conn, false, reply_kind(&msg), b.len());
            if sink.send(Bytes::from(b)).await.is_err() || close {
                break;
            }
        }
    });
    let mut registered: Option<Grant> = None;
    let (mut my_epoch, mut my_count) = (u64::MAX, 0usize);
    let mut my_mail_epoch = u64::MAX;
    let close = loop {
        let frame = match timeout(shared.config.idle_timeout, stream.next()).await {
            Err(_) => break Some(ErrorCode::Timeout),
            Ok(None) => break None,
            Ok(Some(Err(_))) => break Some(ErrorCode::TooLarge),
            Ok(Some(Ok(f))) => f,
        };
        let msg = match decode::<ClientMsg>(&frame, limits) {
            Ok(m) => m,
            Err(_) => break Some(ErrorCode::Malformed),
        };
        shared.record(conn, true, msg_kind(&msg), frame.len());
        let st = &shared.stats;
        match msg {
            ClientMsg::Slot(_) => {
                st.slot_frame_min.fetch_min(frame.len() as u64, Relaxed);
                st.slot_frame_max.fetch_max(frame.len() as u64, Relaxed);
            }
            ClientMsg::Mail(_) => {
                st.mail_frame_min.fetch_min(frame.len() as u64, Relaxed);
                st.mail_frame_max.fetch_max(frame.len() as u64, Relaxed);
            }
            _ => {}
        }
        match msg {
            ClientMsg::Hello(_) => break Some(ErrorCode::UnexpectedHello),
            ClientMsg::Stats => {
                let _ = tx.send(ProxyMsg::Stats(shared.stats.reply())).await;
            }
            ClientMsg::Register(grant) => {
                let geometry = Geometry {
                    bucket_len: shape.bucket_len,
                    buckets: shape.buckets,
                };
                let r = shared.upstream.lock().await.create(&grant, geometry).await;
                match r {
                    Ok(()) => {
                        if registered.is_none() {
                            shared.stats.clients.fetch_add(1, Relaxed);
                        }
                        registered = Some(grant);
                        let _ = tx.send(ProxyMsg::Registered).await;
                    }
                    Err(shroud_net::conn::ConnError::Refused(code)) => break Some(code),
                    Err(e) => {
                        tracing::warn!("client {peer}: registration failed: {e}");
                        break Some(ErrorCode::Unavailable);
                    }
                }
            }
            ClientMsg::Slot(slot) => {
                if registered.as_ref() != Some(&slot.grant) {
                    break Some(ErrorCode::Unauthorized);
                }
                if !fits(&slot, &shape) {
                    break Some(ErrorCode::WrongShape);
                }
                let mut open = shared.open.lock();
                if open.epoch != my_epoch {
                    (my_epoch, my_count) = (open.epoch, 0);
                }
                my_count += 1;
                if my_count > k {
                    drop(open);
                    break Some(ErrorCode::TooManySlots);
                }
                open.slots.push(Pending {
                    slot,
                    reply: tx.clone(),
                });
            }
            ClientMsg::Mail(mail) => {
                if registered.is_none() {
                    break Some(ErrorCode::Unauthorized);
                }
                if !mail_fits(&mail, &shape) {
                    break Some(ErrorCode::WrongShape);
                }
                let mut open = shared.open.lock();
                if open.epoch == my_mail_epoch {
                    drop(open);
                    break Some(ErrorCode::TooManySlots);
                }
                my_mail_epoch = open.epoch;
                open.mail.push(PendingMail {
                    mail,
                    reply: tx.clone(),
                });
            }
        }
    };
    if registered.is_some() {
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
