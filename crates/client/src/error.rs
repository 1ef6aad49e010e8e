//! The client's one error type, shared by every layer. Causes are kept (as [`Source`]), not
//! flattened into text, and the error is `Clone` because one failure can end the operations
//! of many callers.

use std::sync::Arc;

use shroud_proto::ErrorCode;

/// The cause of a [`ClientError`], kept (not flattened into text) and shareable, because
/// one failure can end the operations of many callers.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A scheduler failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The proxy refused us.
    #[error("proxy refused: {0:?}")]
    Refused(ErrorCode),
    /// The proxy's shape does not fit this client's store.
    #[error("the proxy's slot shape does not fit this store: {0}")]
    WrongShape(#[source] Source),
    /// The proxy runs a mailbox and no storage routing key was pinned (the agent's
    /// `--storage-key`).
    #[error(
        "the proxy runs a mailbox: pin storage's routing key with --storage-key (the 64 hex digits in storage's DIR/routing.pub)"
    )]
    NoStorageKey,
    /// Connecting, sending or receiving failed.
    #[error("connection: {0}")]
    Io(#[source] Source),
    /// The proxy answered something the protocol does not allow.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// The server's data failed verification; the operation was not applied.
    #[error("integrity: {0}")]
    Integrity(#[source] Source),
    /// An address or value the store cannot take.
    #[error("bad request: {0}")]
    BadRequest(#[source] Source),
    /// The scheduler has stopped.
    #[error("the client has stopped")]
    Closed,
    /// The local state store failed; the scheduler stopped rather than go on unsafely.
    #[error("client state: {0}")]
    State(#[source] Source),
}

/// Wraps any error as a [`Source`].
pub(crate) fn source(e: impl std::error::Error + Send + Sync + 'static) -> Source {
    Arc::new(e)
}

/// A [`Source`] that is only a message (no error value underneath).
pub(crate) fn message(text: impl Into<String>) -> Source {
    let boxed: Box<dyn std::error::Error + Send + Sync> = text.into().into();
    Arc::from(boxed)
}

/// A state-store failure as a [`ClientError`].
pub(crate) fn state_err(e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::State(source(e))
}
