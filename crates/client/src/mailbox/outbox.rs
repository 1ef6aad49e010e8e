//! Making an account's outbox on storage's mail board (`mail init`): a sealed
//! [`OutboxRequest`], paid with work bound to the outbox's capability, on a connection of its
//! own to the proxy, which forwards it sealed.
//!
//! # Security
//! This is the one mail message off the fixed schedule: the proxy sees a connection make an
//! outbox (once per account, ever), and storage which outbox was made. Neither learns more
//! than that an account exists from then on, which its rounds show anyway.

use shroud_net::conn::find_work;
use shroud_proto::board::{OUTBOX_INFO, OutboxReply, OutboxRequest, OutboxStatus};
use shroud_proto::proxy::{ClientMsg, ProxyMsg};
use shroud_proto::sealed::Sealed;
use shroud_proto::sealed::seal_request;
use shroud_proto::{StoreId, Work};

use super::account::Account;
use super::courier::MailError;
use crate::link::{Link, hello, recv, send};

/// How long storage may take to make an outbox.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes (or finds again: the request is idempotent) `account`'s outbox; returns its number.
pub(crate) async fn make(
    link: &Link,
    storage_key: &[u8; 32],
    account: &Account,
) -> Result<u32, MailError> {
    let unavailable = |e: &dyn std::fmt::Display| MailError::Unavailable(e.to_string());
    let connected = hello(link).await.map_err(|e| unavailable(&e))?;
    let (mut conn, shape) = (connected.conn, connected.shape);
    if !shape.mail() {
        return Err(MailError::Unavailable("the proxy runs no mail".into()));
    }
    let capability = account.capability();
    let work: Work = find_work(StoreId::of(&capability), connected.difficulty)
        .await
        .map_err(|e| unavailable(&e))?;
    let request = OutboxRequest { capability, work };
    let (sealed, responder) = seal_request(
        storage_key,
        OUTBOX_INFO,
        &request.to_bytes(),
        &mut rand::rng(),
    )
    .map_err(|_| MailError::StorageKey)?;
    send(&mut conn, &ClientMsg::Outbox(Sealed(sealed)))
        .await
        .map_err(|e| unavailable(&e))?;
    let reply = tokio::time::timeout(WAIT, recv(&mut conn))
        .await
        .map_err(|_| MailError::Unavailable("storage did not make the outbox in 30 s".into()))?
        .map_err(|e| unavailable(&e))?;
    let ProxyMsg::Outbox(sealed) = reply else {
        return Err(MailError::Unavailable(format!(
            "the proxy answered an outbox request with {reply:?}"
        )));
    };
    let plain = responder
        .open(&sealed.0)
        .map_err(|_| MailError::StorageKey)?;
    let reply = OutboxReply::from_bytes(&plain).ok_or(MailError::StorageKey)?;
    match reply.status {
        OutboxStatus::Ok if reply.outbox < shape.outboxes() => {
            u32::try_from(reply.outbox).map_err(|_| MailError::StorageKey)
        }
        OutboxStatus::Ok => Err(MailError::StorageKey),
        OutboxStatus::Full => Err(MailError::BoardFull),
        OutboxStatus::NeedsWork | OutboxStatus::Failed => Err(MailError::Unavailable(format!(
            "storage did not make the outbox ({:?})",
            reply.status
        ))),
    }
}
