//! The client's connection to the proxy: TLS, the hello (which brings the proxy's shape),
//! registering the store, and framed messages.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::frame_codec;
use shroud_net::punctual::Gate;
use shroud_net::transport::{BoxIo, ClientTls};
use shroud_proto::board::PirBytes;
use shroud_proto::proxy::{ClientMsg, ProxyMsg};
use shroud_proto::{Difficulty, Grant, Hello, Limits, Shape, decode, encode};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::{ClientError, source};

/// Where and how to reach the proxy.
#[derive(Clone)]
pub(crate) struct Link {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// TLS towards the proxy.
    pub tls: ClientTls,
    /// The first wait before reconnecting.
    pub min_backoff: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

/// A framed connection to the proxy, and the gate that holds its writes until their time
/// (see [`shroud_net::punctual`]).
pub(crate) struct Conn {
    /// The frames.
    pub frames: Framed<BoxIo, LengthDelimitedCodec>,
    /// Holds the writes for a punctual release.
    pub gate: Gate,
}

/// A connection to the proxy, and what its hello said.
pub(crate) struct Connected {
    /// The connection.
    pub conn: Conn,
    /// The proxy's shape.
    pub shape: Shape,
    /// The work storage asks for a new store.
    pub difficulty: Difficulty,
}

/// The longest a connection and hello may take.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// The longest a registration may take (the proxy's own storage timeouts are shorter).
const REGISTER_WAIT: Duration = Duration::from_secs(15);

/// Connects and exchanges hellos.
pub(crate) async fn hello(link: &Link) -> Result<Connected, ClientError> {
    tokio::time::timeout(HELLO_WAIT, hello_untimed(link))
        .await
        .map_err(|_| ClientError::Protocol("the proxy did not answer the hello within 10 s"))?
}

async fn hello_untimed(link: &Link) -> Result<Connected, ClientError> {
    let (io, gate) = link
        .tls
        .connect_punctual(link.proxy)
        .await
        .map_err(|e| ClientError::Io(source(e)))?;
    let mut conn = Conn {
        frames: Framed::new(io, frame_codec(Limits::default())),
        gate,
    };
    send(&mut conn, &ClientMsg::Hello(Hello::current())).await?;
    match recv(&mut conn).await? {
        ProxyMsg::Hello(_, shape, difficulty) => Ok(Connected {
            conn,
            shape,
            difficulty,
        }),
        ProxyMsg::Error(code) => Err(ClientError::Refused(code)),
        _ => Err(ClientError::Protocol("unexpected reply to hello")),
    }
}

/// Connects, exchanges hellos and registers `grant`'s store, with the work that pays for it
/// if it is new.
pub(crate) async fn connect(link: &Link, grant: &Grant) -> Result<Connected, ClientError> {
    let Connected {
        mut conn,
        shape,
        difficulty,
    } = hello(link).await?;
    let work = shroud_net::conn::find_work(grant.store, difficulty)
        .await
        .map_err(|e| ClientError::Io(source(e)))?;
    send(&mut conn, &ClientMsg::Register(grant.clone(), work)).await?;
    let reply = tokio::time::timeout(REGISTER_WAIT, recv(&mut conn))
        .await
        .map_err(|_| {
            ClientError::Protocol("the proxy did not confirm the registration within 15 s")
        })??;
    match reply {
        ProxyMsg::Registered => Ok(Connected {
            conn,
            shape,
            difficulty,
        }),
        ProxyMsg::Error(code) => Err(ClientError::Refused(code)),
        _ => Err(ClientError::Protocol("unexpected reply to register")),
    }
}

/// The longest storage may take to keep a PIR key (several MiB).
const KEY_WAIT: Duration = Duration::from_secs(30);

/// Sends this connection's PIR key (once per connection, before any round frame) and waits
/// until storage keeps it.
pub(crate) async fn upload_key(conn: &mut Conn, key: Vec<u8>) -> Result<(), ClientError> {
    send(conn, &ClientMsg::ReaderKey(PirBytes(key))).await?;
    let reply = tokio::time::timeout(KEY_WAIT, recv(conn))
        .await
        .map_err(|_| ClientError::Protocol("storage did not keep the PIR key within 30 s"))??;
    match reply {
        ProxyMsg::ReaderKept => Ok(()),
        ProxyMsg::Error(code) => Err(ClientError::Refused(code)),
        _ => Err(ClientError::Protocol("unexpected reply to the PIR key")),
    }
}

pub(crate) async fn send(conn: &mut Conn, msg: &ClientMsg) -> Result<(), ClientError> {
    let b = encode(msg, Limits::default()).map_err(|e| ClientError::Io(source(e)))?;
    conn.frames
        .send(Bytes::from(b))
        .await
        .map_err(|e| ClientError::Io(source(e)))
}

/// Writes out whatever is still buffered (after a punctual release the socket did not take
/// whole).
pub(crate) async fn flush(conn: &mut Conn) -> Result<(), ClientError> {
    SinkExt::<Bytes>::flush(&mut conn.frames)
        .await
        .map_err(|e| ClientError::Io(source(e)))
}

pub(crate) async fn recv(conn: &mut Conn) -> Result<ProxyMsg, ClientError> {
    let f = conn
        .frames
        .next()
        .await
        .ok_or_else(|| ClientError::Protocol("proxy closed the connection"))?
        .map_err(|e| ClientError::Io(source(e)))?;
    decode(&f, Limits::default()).map_err(|e| ClientError::Io(source(e)))
}
