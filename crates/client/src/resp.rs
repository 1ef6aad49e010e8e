//! The Redis protocol front (RESP2): enough of Redis for `redis-cli` and
//! `redis-benchmark -t set,get` to work unmodified against the agent.
//!
//! Supported: PING, GET, SET (no options), DEL, EXISTS, MGET, MSET, DBSIZE, INFO, KEYS (glob
//! patterns with `*`, `?` and `\` escapes), plus the connection chatter the tools send (COMMAND,
//! CONFIG GET, SELECT 0, QUIT). Anything else gets a RESP error and the connection stays open.
//!
//! Frames come from `redis-protocol`'s RESP2 decoder. Untrusted input is bounded: a
//! connection's unparsed input may not exceed [`MAX_REQUEST`], and a request is an array of at
//! most [`MAX_ARGS`] bulk strings; beyond that the client gets an error and is disconnected.

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

use crate::kv::Kv;

/// The largest request a connection may send, bytes (a 64 KiB value and change, many times).
pub const MAX_REQUEST: usize = 8 << 20;
/// The most arguments in one request.
pub const MAX_ARGS: usize = 4096;

/// What parsing the buffered input gave.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Parsed {
    /// A complete command (its arguments) and the bytes it used.
    Command(Vec<Vec<u8>>, usize),
    /// Not a full frame yet.
    Incomplete,
    /// Garbage or a limit broken: reply with this error and close.
    Invalid(String),
}

/// The client's side: sends one command on `stream` and reads its one reply (for the CLI,
/// the demo and the tests; one command in flight at a time).
pub async fn call<S>(stream: &mut S, args: &[&[u8]]) -> std::io::Result<OwnedFrame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&command(args)).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match decode(&buf) {
            Ok(Some((frame, _))) => return Ok(frame),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ));
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the agent closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses one command from the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    match decode(buf) {
        Ok(Some((OwnedFrame::Array(items), used))) => {
            if items.is_empty() || items.len() > MAX_ARGS {
                return Parsed::Invalid("ERR Protocol error: bad number of arguments".into());
            }
            let mut args = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => args.push(b),
                    _ => {
                        return Parsed::Invalid("ERR Protocol error: expected bulk strings".into());
                    }
                }
            }
            Parsed::Command(args, used)
        }
        Ok(Some((_, _))) => {
            Parsed::Invalid("ERR Protocol error: expected an array of bulk strings".into())
        }
        Ok(None) if buf.len() > MAX_REQUEST => {
            Parsed::Invalid("ERR Protocol error: request too large".into())
        }
        Ok(None) => Parsed::Incomplete,
        Err(_) => Parsed::Invalid("ERR Protocol error: invalid RESP".into()),
    }
}

/// A command, encoded as a RESP2 array of bulk strings (what clients send).
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    req
}

/// A reply, encoded.
pub fn encode(frame: &OwnedFrame) -> Vec<u8> {
    let mut buf = vec![0u8; frame.encode_len(false)];
    match redis_protocol::resp2::encode::encode(&mut buf, frame, false) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => b"-ERR internal encoding error\r\n".to_vec(),
    }
}

fn err(msg: impl Into<String>) -> OwnedFrame {
    OwnedFrame::Error(msg.into())
}

fn ok() -> OwnedFrame {
    OwnedFrame::SimpleString(b"OK".to_vec())
}

fn arity(name: &str) -> OwnedFrame {
    err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis-style glob matching: `*`, `?`, `\x`; everything else literal.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && glob(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// Runs one command against `kv`; the flag says whether to close the connection after.
pub async fn execute(kv: &Kv, args: Vec<Vec<u8>>) -> (OwnedFrame, bool) {
    execute_with_mail(kv, None, args).await
}

/// [`execute`], with the `MAIL.*` commands of [`crate::mailbox::commands`] served by `mail`.
pub async fn execute_with_mail(
    kv: &Kv,
    mail: Option<&crate::mailbox::Mailbox>,
    args: Vec<Vec<u8>>,
) -> (OwnedFrame, bool) {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let a = &args[1..];
    if name.starts_with("MAIL.") {
        return (
            crate::mailbox::commands::execute(mail, &name, a).await,
            false,
        );
    }
    let kverr = |e: crate::kv::KvError| err(format!("ERR {e}"));
    let reply = match (name.as_str(), a.len()) {
        ("PING", 0) => OwnedFrame::SimpleString(b"PONG".to_vec()),
        ("PING", 1) => OwnedFrame::BulkString(a[0].clone()),
        ("PING", _) => arity("ping"),
        ("QUIT", _) => return (ok(), true),
        ("GET", 1) => match kv.get(&a[0]).await {
            Ok(Some(v)) => OwnedFrame::BulkString(v),
            Ok(None) => OwnedFrame::Null,
            Err(e) => kverr(e),
        },
        ("GET", _) => arity("get"),
        ("SET", 2) => match kv.put(&a[0], &a[1]).await {
            Ok(()) => ok(),
            Err(e) => kverr(e),
        },
        ("SET", n) if n > 2 => err("ERR SET options are not supported"),
        ("SET", _) => arity("set"),
        ("MSET", n) if n > 0 && n % 2 == 0 => {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            match kv.put_many(&pairs).await {
                Ok(()) => ok(),
                Err(e) => kverr(e),
            }
        }
        ("MSET", _) => arity("mset"),
        ("MGET", n) if n > 0 => {
            let mut out = Vec::with_capacity(n);
            for k in a {
                out.push(match kv.get(k).await {
                    Ok(Some(v)) => OwnedFrame::BulkString(v),
                    Ok(None) => OwnedFrame::Null,
                    Err(e) => return (kverr(e), false),
                });
            }
            OwnedFrame::Array(out)
        }
        ("MGET", _) => arity("mget"),
        ("DEL", n) if n > 0 => {
            let mut count = 0;
            for k in a {
                match kv.delete(k).await {
                    Ok(true) => count += 1,
                    Ok(false) => {}
                    Err(e) => return (kverr(e), false),
                }
            }
            OwnedFrame::Integer(count)
        }
        ("DEL", _) => arity("del"),
        ("EXISTS", n) if n > 0 => {
            let mut count = 0;
            for k in a {
                match kv.contains(k).await {
                    Ok(true) => count += 1,
                    Ok(false) => {}
                    Err(e) => return (kverr(e), false),
                }
            }
            OwnedFrame::Integer(count)
        }
        ("EXISTS", _) => arity("exists"),
        ("DBSIZE", 0) => OwnedFrame::Integer(kv.len().await as i64),
        ("KEYS", 1) => OwnedFrame::Array(
            kv.keys()
                .await
                .into_iter()
                .filter(|k| glob(&a[0], k))
                .map(OwnedFrame::BulkString)
                .collect(),
        ),
        ("KEYS", _) => arity("keys"),
        ("INFO", _) => {
            let s = kv.client().shape();
            let st = kv.client().stats();
            use std::sync::atomic::Ordering::Relaxed;
            let text = format!(
                "# Server\r\nredis_version:7.0.0-shroud\r\nshroud_epoch_ms:{}\r\nshroud_slots_per_epoch:{}\r\n\
                 # Keyspace\r\nkeys:{}\r\nblocks:{}\r\nblock_size:{}\r\n\
                 # Schedule\r\nepochs:{}\r\nreal_accesses:{}\r\ndummy_accesses:{}\r\nreconnects:{}\r\n\
                 # Disk\r\nstate_bytes_written:{}\r\n",
                s.epoch_ms,
                s.slots_per_epoch,
                kv.len().await,
                s.capacity,
                s.block_size,
                st.epochs.load(Relaxed),
                st.real.load(Relaxed),
                st.dummy.load(Relaxed),
                st.reconnects.load(Relaxed),
                st.state_bytes.load(Relaxed)
            );
            OwnedFrame::BulkString(text.into_bytes())
        }
        ("COMMAND", _) | ("CONFIG", _) => OwnedFrame::Array(Vec::new()),
        ("SELECT", 1) if a[0] == b"0" => ok(),
        ("SELECT", _) => err("ERR only database 0 exists"),
        _ => err(format!(
            "ERR unknown command '{}'",
            String::from_utf8_lossy(&args[0])
        )),
    };
    (reply, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_commands_and_partial_input() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
        assert_eq!(
            parse(set),
            Parsed::Command(
                vec![b"SET".to_vec(), b"k".to_vec(), b"vv".to_vec()],
                set.len()
            )
        );
        assert_eq!(parse(&set[..10]), Parsed::Incomplete);
        assert!(matches!(parse(b"+OK\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"*0\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"*1\r\n:5\r\n"), Parsed::Invalid(_)));
        // A hostile length prefix is just incomplete until the buffer limit.
        assert_eq!(parse(b"*1\r\n$999999999\r\nab"), Parsed::Incomplete);
        assert_eq!(parse(b"*2000000000\r\n"), Parsed::Incomplete);
    }

    #[test]
    fn globs() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"user:*", b"user:42"));
        assert!(!glob(b"user:*", b"usr:42"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"a\\*", b"a*"));
        assert!(!glob(b"a\\*", b"ab"));
    }

    #[test]
    fn encodes_replies() {
        assert_eq!(encode(&ok()), b"+OK\r\n");
        assert_eq!(encode(&OwnedFrame::Null), b"$-1\r\n");
        assert_eq!(encode(&OwnedFrame::Integer(3)), b":3\r\n");
        assert_eq!(
            encode(&OwnedFrame::BulkString(b"hi".to_vec())),
            b"$2\r\nhi\r\n"
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }
    }
}
