//! A connection whose frames leave at a set time, timed from when its replies arrived, by a
//! thread that does nothing else.
//!
//! A client's frames must leave at a fixed time in the epoch, not when its work is done
//! (issue 12, finding 3). Timing that on the async runtime is not enough on a shared CPU: the
//! worker that wakes to read the replies, and again to send, is the one that just did the
//! epoch's work, and the kernel's fair scheduler delays a thread by its recent CPU use, so a
//! busier client read its replies later and left later (by about 20 us under two CPU hogs:
//! enough for a KS test over 1,000 epochs). So each connection has a thread of its own, which
//! does nothing but read the socket, note when the replies to its last release arrived, wait
//! (still reading, so that what arrives before a release is never taken for its reply), and
//! write:
//! - it reads everything that arrives and hands it to the runtime through a buffer
//!   ([`PunctualTcp`]'s reads), so the moment replies arrive is seen by an idle thread;
//! - the runtime frames and seals the next frames into a held buffer ([`Gate::hold`]), and the
//!   thread puts them on the socket at the instant ([`Gate::release`]): a fixed delay after
//!   the replies arrived ([`When::AfterReply`]), or a given instant.
//!
//! Every client's frames then leave through the same wake-ups of an idle thread, whatever its
//! work.
//!
//! # Security
//! Only when bytes leave is governed here; which bytes leave is the caller's. If the socket
//! cannot take everything at once, the rest follows through the runtime ([`PunctualTcp`]'s
//! flush), which only the connection's own backpressure delays. What the thread reads is
//! bounded ([`INBOX_LIMIT`]): past it, reading waits for the runtime to take some.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll as TaskPoll, Waker as TaskWaker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The most bytes read ahead of the runtime.
pub const INBOX_LIMIT: usize = 16 << 20;

/// A TCP connection read by its own punctual thread, whose writes can be held and released
/// at a set time ([`Gate`]). Not held, writes go straight through (after anything still
/// buffered, in order).
pub struct PunctualTcp {
    tcp: TcpStream,
    shared: Arc<Shared>,
    thread: Thread,
}

/// The handle that holds a [`PunctualTcp`]'s writes and has its thread release them.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
    thread: Thread,
}

/// When the held writes leave.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// At this instant (at once if it has passed).
    At(Instant),
    /// This long after the first bytes that arrived since the previous release, as the
    /// connection's thread read them (at once if none came: a new connection).
    AfterReply(Duration),
}

/// What a release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The writes were handed over after their time (the caller's work overran it).
    pub late: bool,
}

struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: bool,
    /// Bytes written while held (or not yet taken by the socket), in order.
    out: Vec<u8>,
    /// Bytes the thread read, not yet taken by the runtime.
    inbox: BytesMut,
    /// The runtime's reader, waiting for bytes.
    reader: Option<TaskWaker>,
    /// The peer closed its side.
    eof: bool,
    /// Reading failed.
    failed: Option<(io::ErrorKind, String)>,
    /// The thread stopped reading at [`INBOX_LIMIT`].
    paused: bool,
    /// When the first bytes after the last release arrived.
    reply: Option<Instant>,
    /// A release happened and no byte has arrived since.
    awaiting: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain bytes behind, still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the held writes go through `socket` (the thread's copy), as far as it takes them
    /// without blocking.
    fn release(&self, socket: &mut mio::net::TcpStream) {
        let mut state = self.lock();
        state.held = false;
        while !state.out.is_empty() {
            match socket.write(&state.out) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    state.out.drain(..n);
                }
            }
        }
    }

    /// Reads what the socket has, at `now`; returns false once the connection is over.
    fn read_ready(&self, socket: &mut mio::net::TcpStream, now: Instant) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut state = self.lock();
        while !state.paused && state.failed.is_none() && !state.eof {
            if state.inbox.len() >= INBOX_LIMIT {
                state.paused = true;
                break;
            }
            match socket.read(&mut buf) {
                Ok(0) => state.eof = true,
                Ok(n) => {
                    if std::mem::take(&mut state.awaiting) {
                        state.reply = Some(now);
                    }
                    state.inbox.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => state.failed = Some((e.kind(), e.to_string())),
            }
        }
        let over = state.eof || state.failed.is_some();
        let reader = state.reader.take();
        drop(state);
        if let Some(w) = reader {
            w.wake();
        }
        !over
    }
}

impl PunctualTcp {
    /// Wraps a connected stream and starts its thread; returns it and its [`Gate`].
    pub fn new(tcp: TcpStream) -> io::Result<(Self, Gate)> {
        use std::os::fd::AsFd;
        // The thread's copy of the socket (a duplicated descriptor, non-blocking like the
        // original), for its reads and its punctual writes.
        let socket = mio::net::TcpStream::from_std(std::net::TcpStream::from(
            tcp.as_fd().try_clone_to_owned()?,
        ));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        let thread = Thread::start(shared.clone(), socket)?;
        let gate = Gate {
            shared: shared.clone(),
            thread: thread.clone(),
        };
        Ok((
            PunctualTcp {
                tcp,
                shared,
                thread,
            },
            gate,
        ))
    }

    /// Writes out what is buffered, unless held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        let mut state = self.shared.lock();
        if state.held {
            return TaskPoll::Ready(Ok(()));
        }
        while !state.out.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &state.out))?;
            if n == 0 {
                return TaskPoll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            state.out.drain(..n);
        }
        TaskPoll::Ready(Ok(()))
    }
}

impl Drop for PunctualTcp {
    fn drop(&mut self) {
        // The thread's copy of the socket would keep the connection open.
        self.thread.send(Job::Forget);
    }
}

impl Gate {
    /// From now on, writes are buffered until [`Gate::release`] lets them go.
    pub fn hold(&self) {
        self.shared.lock().held = true;
    }

    /// Has the connection's thread let the held writes go `when` said; resolves once they are
    /// on the socket, or as far as it took them. Flush the stream afterwards for the rest.
    pub async fn release(&self, when: When) -> Released {
        let (done, wait) = oneshot::channel();
        if self.thread.send(Job::Release { when, done })
            && let Ok(r) = wait.await
        {
            return r;
        }
        // The thread is gone (only if it could not run): the caller's flush writes them.
        self.shared.lock().held = false;
        Released { late: false }
    }
}

impl AsyncRead for PunctualTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> TaskPoll<io::Result<()>> {
        let mut state = self.shared.lock();
        if !state.inbox.is_empty() {
            let n = state.inbox.len().min(buf.remaining());
            buf.put_slice(&state.inbox[..n]);
            state.inbox.advance(n);
            if state.paused && state.inbox.len() < INBOX_LIMIT / 2 {
                state.paused = false;
                drop(state);
                self.thread.send(Job::Resume);
            }
            return TaskPoll::Ready(Ok(()));
        }
        if let Some((kind, why)) = &state.failed {
            return TaskPoll::Ready(Err(io::Error::new(*kind, why.clone())));
        }
        if state.eof {
            return TaskPoll::Ready(Ok(()));
        }
        state.reader = Some(cx.waker().clone());
        TaskPoll::Pending
    }
}

impl AsyncWrite for PunctualTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> TaskPoll<io::Result<usize>> {
        {
            let mut state = self.shared.lock();
            if state.held {
                state.out.extend_from_slice(buf);
                return TaskPoll::Ready(Ok(buf.len()));
            }
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        self.shared.lock().held = false;
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

enum Job {
    Release {
        when: When,
        done: oneshot::Sender<Released>,
    },
    /// Read again after a pause at [`INBOX_LIMIT`].
    Resume,
    /// The connection is dropped: close the thread's copy and end.
    Forget,
}

const WAKE: Token = Token(0);
const SOCKET: Token = Token(1);

/// A connection's thread: the sender of its jobs.
#[derive(Clone)]
struct Thread {
    tx: std::sync::mpsc::Sender<Job>,
    waker: Arc<Waker>,
}

impl Thread {
    fn start(shared: Arc<Shared>, mut socket: mio::net::TcpStream) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shroud-punctual".into())
            .stack_size(256 * 1024)
            .spawn(move || run(poll, socket, &shared, &rx))?;
        Ok(Thread { tx, waker })
    }

    /// Hands the thread a job; false if it is gone.
    fn send(&self, job: Job) -> bool {
        self.tx.send(job).is_ok() && self.waker.wake().is_ok()
    }
}

/// The thread: read what arrives (noting when), release when asked.
fn run(
    mut poll: Poll,
    mut socket: mio::net::TcpStream,
    shared: &Shared,
    rx: &std::sync::mpsc::Receiver<Job>,
) {
    let mut events = Events::with_capacity(8);
    let mut open = shared.read_ready(&mut socket, Instant::now());
    loop {
        loop {
            match rx.try_recv() {
                Ok(Job::Release { when, done }) => {
                    let released = release(shared, &mut poll, &mut socket, &mut open, when);
                    let _ = done.send(released);
                }
                Ok(Job::Resume) => {
                    if open {
                        open = shared.read_ready(&mut socket, Instant::now());
                    }
                }
                Ok(Job::Forget) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        if poll.poll(&mut events, None).is_err() {
            // The poller failed: the runtime will see the connection end.
            let mut state = shared.lock();
            state.failed = Some((io::ErrorKind::Other, "the punctual poller failed".into()));
            if let Some(w) = state.reader.take() {
                w.wake();
            }
            return;
        }
        let now = Instant::now();
        if open && events.iter().any(|e| e.token() == SOCKET) {
            open = shared.read_ready(&mut socket, now);
            if !open {
                let _ = poll.registry().deregister(&mut socket);
            }
        }
    }
}

/// Below this much time left, a release sleeps instead of polling (the poller's timeout has
/// millisecond steps).
const PRECISE: Duration = Duration::from_millis(2);

/// One release: wait for its time, reading what arrives meanwhile, let the writes go, and
/// start watching for the reply.
///
/// Bytes that arrive before the release are read and timed as they come, so that they are
/// never taken for its reply: read only after the wait, they would set the next release's
/// time from the end of this one, and whether they came before or after the caller asked
/// for this release depends on how quickly its work was done (a round's answers, landing
/// just after the slots' replies, did that once per round).
fn release(
    shared: &Shared,
    poll: &mut Poll,
    socket: &mut mio::net::TcpStream,
    open: &mut bool,
    when: When,
) -> Released {
    let now = Instant::now();
    let at = {
        let mut state = shared.lock();
        // The reply to the previous release, if any, is this one's; what comes from now
        // on is not.
        state.awaiting = false;
        match when {
            When::At(at) => at,
            When::AfterReply(after) => state.reply.take().map_or(now, |r| r + after),
        }
    };
    let mut events = Events::with_capacity(8);
    loop {
        let left = at.saturating_duration_since(Instant::now());
        if left <= PRECISE {
            // A precise sleep for the rest (the runtime's timer has millisecond steps).
            std::thread::sleep(left);
            break;
        }
        if poll.poll(&mut events, Some(left - PRECISE)).is_err() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            break;
        }
        if *open && events.iter().any(|e| e.token() == SOCKET) {
            *open = read_before_release(shared, poll, socket);
        }
    }
    // What came during the last sleep, before the writes go.
    if *open {
        *open = read_before_release(shared, poll, socket);
    }
    shared.release(socket);
    let mut state = shared.lock();
    state.reply = None;
    state.awaiting = true;
    Released { late: now > at }
}

/// Reads what the socket has (not a reply: no release is awaiting one); false once the
/// connection is over, and then stops watching it.
fn read_before_release(shared: &Shared, poll: &Poll, socket: &mut mio::net::TcpStream) -> bool {
    let open = shared.read_ready(socket, Instant::now());
    if !open {
        let _ = poll.registry().deregister(socket);
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A punctual connection on loopback, its gate, and the server's end.
    async fn connected() -> (PunctualTcp, Gate, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (held, gate) = PunctualTcp::new(client.unwrap()).unwrap();
        (held, gate, server.unwrap().0)
    }

    /// Held writes stay off the wire until released at their instant, then arrive in order
    /// with everything written after them, even when they are more than the socket takes at
    /// once.
    #[tokio::test]
    async fn held_writes_leave_at_their_instant_in_order() {
        let (mut held, gate, mut server) = connected().await;
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
        let released = gate.release(When::At(at)).await;
        assert!(!released.late);
        assert!(Instant::now() >= at);
        held.write_all(b"tail").await.unwrap();
        held.flush().await.unwrap();
        let (arrived, got) = reader.await.unwrap();
        assert!(arrived >= at);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
    }

    /// A release "after the reply" waits that long from when the punctual thread saw the
    /// peer's bytes arrive; with nothing seen yet (a new connection) it goes at once.
    #[tokio::test]
    async fn a_release_after_the_reply_counts_from_its_arrival() {
        let (mut held, gate, mut server) = connected().await;
        let after = Duration::from_millis(60);
        gate.hold();
        held.write_all(b"ping").await.unwrap();
        let t = Instant::now();
        gate.release(When::AfterReply(after)).await;
        assert!(t.elapsed() < after, "nothing seen yet: at once");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let replied = Instant::now();
        server.write_all(b"pong").await.unwrap();
        held.read_exact(&mut buf).await.unwrap();
        // Work on the runtime after the reply does not move the release.
        std::thread::sleep(Duration::from_millis(30));
        gate.hold();
        held.write_all(b"next").await.unwrap();
        let released = gate.release(When::AfterReply(after)).await;
        assert!(!released.late);
        server.read_exact(&mut buf).await.unwrap();
        let gap = replied.elapsed();
        assert_eq!(&buf, b"next");
        assert!(gap >= after, "left {gap:?} after the reply");
        assert!(
            gap < after + Duration::from_millis(25),
            "left {gap:?} after the reply"
        );
        // Work past the instant: late, and at once.
        gate.hold();
        held.write_all(b"more").await.unwrap();
        server.write_all(b"r").await.unwrap();
        let mut one = [0u8; 1];
        held.read_exact(&mut one).await.unwrap();
        std::thread::sleep(after + Duration::from_millis(10));
        let released = gate.release(When::AfterReply(after)).await;
        assert!(released.late);
        server.read_exact(&mut buf).await.unwrap();
    }

    /// Bytes that arrive while a release waits for its time (a second reply, landing just
    /// after the first) are not the reply to that release: the next release still counts
    /// from the first bytes after it.
    #[tokio::test]
    async fn bytes_that_arrive_before_a_release_are_not_its_reply() {
        let (mut held, gate, mut server) = connected().await;
        let after = Duration::from_millis(60);
        let mut buf = [0u8; 4];
        gate.hold();
        held.write_all(b"ping").await.unwrap();
        gate.release(When::AfterReply(after)).await;
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        held.read_exact(&mut buf).await.unwrap();
        // The next frames, released at once after the reply, while more arrives before
        // they leave.
        gate.hold();
        held.write_all(b"next").await.unwrap();
        let (released, _) = tokio::join!(gate.release(When::AfterReply(after)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.write_all(b"more").await.unwrap();
        });
        assert!(!released.late);
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"next");
        held.read_exact(&mut buf).await.unwrap();
        // The reply to "next" comes 40 ms after it left; the frames after it leave 60 ms
        // after that reply, not 60 ms after "more" was read.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let replied = Instant::now();
        server.write_all(b"back").await.unwrap();
        held.read_exact(&mut buf).await.unwrap();
        gate.hold();
        held.write_all(b"last").await.unwrap();
        let released = gate.release(When::AfterReply(after)).await;
        assert!(
            !released.late,
            "released at once: timed from the bytes before"
        );
        server.read_exact(&mut buf).await.unwrap();
        let gap = replied.elapsed();
        assert!(gap >= after, "left {gap:?} after the reply");
    }
}
