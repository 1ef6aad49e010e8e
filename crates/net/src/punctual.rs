//! Writes that leave at a set instant, whatever the process was doing before it.
//!
//! A client's frames must leave at a fixed time in the epoch, not when its work is done
//! (issue 12, finding 3). Sleeping until that time on the async runtime is not enough on a
//! shared CPU: the thread that wakes to send is the one that just did the epoch's work, and
//! the kernel's fair scheduler delays a thread by its recent CPU use, so a busier client
//! leaves later. So the frames are encrypted and framed ahead of time into a [`HeldTcp`]'s
//! buffer while it is held, and a [`Punctual`] thread, which does nothing but sleep and write,
//! puts them on the socket at the instant: every client leaves through the same wake-up of
//! an idle thread, whatever its work.
//!
//! # Security
//! Only the moment the bytes leave is governed here; which bytes leave is the caller's. If the
//! socket cannot take everything at once, the rest follows through the runtime
//! ([`HeldTcp`]'s flush), which only the connection's own backpressure delays.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A TCP stream whose writes can be held in a buffer and released later, all at once, by a
/// [`Punctual`] thread. Not held, it writes straight through (after anything still
/// buffered, in order).
pub struct HeldTcp {
    tcp: TcpStream,
    shared: Arc<Shared>,
}

/// The handle that holds and releases a [`HeldTcp`]'s writes.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The same socket (a duplicated descriptor, non-blocking like the original), for the
    /// [`Punctual`] thread's writes.
    raw: std::net::TcpStream,
}

#[derive(Default)]
struct State {
    held: bool,
    /// Bytes written while held (or not yet taken by the socket), in order.
    buf: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain bytes behind, still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HeldTcp {
    /// Wraps a connected stream; returns it and its [`Gate`].
    pub fn new(tcp: TcpStream) -> io::Result<(Self, Gate)> {
        use std::os::fd::AsFd;
        let raw = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            raw,
        });
        Ok((
            HeldTcp {
                tcp,
                shared: shared.clone(),
            },
            Gate { shared },
        ))
    }

    /// Writes out what is buffered, unless held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        if state.held {
            return Poll::Ready(Ok(()));
        }
        while !state.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &state.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            state.buf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Gate {
    /// From now on, writes are buffered until [`Punctual::release_at`] lets them go.
    pub fn hold(&self) {
        self.shared.lock().held = true;
    }

    /// Lets everything buffered go now, from the calling thread, as far as the socket takes
    /// it without blocking; the rest goes with the stream's next flush.
    fn release(&self) {
        let mut state = self.shared.lock();
        state.held = false;
        while !state.buf.is_empty() {
            match (&self.shared.raw).write(&state.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    state.buf.drain(..n);
                }
            }
        }
    }
}

impl AsyncRead for HeldTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for HeldTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        {
            let mut state = self.shared.lock();
            if state.held {
                state.buf.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().held = false;
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A thread of its own that releases held writes at their instant. It does nothing else, so
/// its wake-up is the same whatever the rest of the process did; it ends when the
/// `Punctual` is dropped.
pub struct Punctual {
    tx: std::sync::mpsc::Sender<(Instant, Gate, oneshot::Sender<()>)>,
}

impl Punctual {
    /// Starts the thread.
    pub fn start() -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Gate, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("shroud-punctual".into())
            .spawn(move || {
                while let Ok((at, gate, done)) = rx.recv() {
                    // A precise sleep (the runtime's timer has millisecond steps).
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    gate.release();
                    let _ = done.send(());
                }
            })?;
        Ok(Punctual { tx })
    }

    /// Releases `gate`'s writes at `at` (at once if that has passed); resolves once they
    /// are on the socket, or as far as it took them. Flush the stream afterwards for the rest.
    pub async fn release_at(&self, at: Instant, gate: &Gate) {
        let (done, wait) = oneshot::channel();
        if self.tx.send((at, gate.clone(), done)).is_err() {
            // The thread is gone (it never panics; only if it could not run): release here.
            gate.release();
            return;
        }
        let _ = wait.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Held writes stay off the wire until released at their instant, then arrive in order
    /// with everything written after them, even when they are more than the socket takes at
    /// once.
    #[tokio::test]
    async fn held_writes_leave_at_their_instant_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut held, gate) = HeldTcp::new(client.unwrap()).unwrap();
        let (mut server, _) = server.unwrap();
        let punctual = Punctual::start().unwrap();
        held.write_all(b"hello ").await.unwrap();
        gate.hold();
        // More than a loopback socket's buffer takes in one write.
        let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        held.write_all(&big).await.unwrap();
        held.flush().await.unwrap();
        let mut first = [0u8; 6];
        server.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"hello ");
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), server.read(&mut probe)).await;
        assert!(early.is_err(), "held bytes left before their release");
        let at = Instant::now() + Duration::from_millis(30);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; (8 << 20) + 4];
            server.read_exact(&mut got).await.unwrap();
            (Instant::now(), got)
        });
        punctual.release_at(at, &gate).await;
        assert!(Instant::now() >= at);
        held.write_all(b"tail").await.unwrap();
        held.flush().await.unwrap();
        let (arrived, got) = reader.await.unwrap();
        assert!(arrived >= at);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
    }
}
