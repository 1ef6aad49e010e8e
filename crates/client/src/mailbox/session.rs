//! Forward secrecy: the Olm sessions (the Double Ratchet, as Matrix's audited vodozemac
//! implements it, session version 1) a client keeps with each contact, which encrypt every
//! chunk's content (issue 13, "Forward secrecy"; docs/mail-delivery.md).
//!
//! - **Starting without a server.** A contact's address holds its Olm identity key and a
//!   pre-key (vodozemac's fallback key, which is not used up); the first to write starts an
//!   outbound session on them, and its first messages are pre-key messages, from which the
//!   reader makes the inbound session. Nothing else travels, and no server learns who starts
//!   talking to whom. A pre-key message whose identity key is not the one in the contact's
//!   address is refused: a changed key is never accepted silently.
//! - **Forward secrecy.** Every message key is used once and forgotten; each answer turns the
//!   ratchet with fresh Diffie-Hellman keys. A thief of today's state cannot decrypt what
//!   storage recorded before. Until a session's reader first answers on it, its messages rest
//!   on the reader's pre-key: a thief of that reader's account *and* the recorded pre-key
//!   messages reads those first messages (as in Signal without one-time keys). So the reader
//!   answers on a new session at once (the courier sends an empty chunk back).
//! - **Both starting at once.** Each side then has two sessions. All are kept for reading;
//!   both sides send on the same one: among the sessions that have received, the one started
//!   by the side with the smaller identity key; until one has, the newest.
//!
//! Sessions live in the courier's state, saved in the write-ahead record after every change
//! and before anything they encrypted leaves (a crash never makes a message key encrypt two
//! different contents).

use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, OlmMessage, PreKeyMessage, Session, SessionConfig, SessionPickle};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::chunk::{Content, OlmBytes};
use super::identity::Address;

/// Sessions kept per contact (the oldest that is not the sending one goes first).
const MAX_SESSIONS: usize = 4;

/// Why a chunk's content did not encrypt or decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A pre-key message names an identity key other than the contact's address does.
    #[error("the contact's identity key changed: refused")]
    KeyChanged,
    /// No session opens it: altered, replayed after its key was used, or from a session
    /// this client no longer has.
    #[error("no session opens the message")]
    Undecryptable,
    /// A contact key that gives no secret (a low-order point), or a malformed message.
    #[error("bad key or message: {0}")]
    Bad(String),
}

/// One session, as saved: vodozemac's pickle, serialized (JSON, the format its tests use).
///
/// # Security
/// Holds the session's chain keys: wiped on drop.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Saved {
    #[serde(with = "serde_bytes")]
    pickle: Vec<u8>,
    /// True if the contact started it (it came as a pre-key message).
    #[zeroize(skip)]
    theirs: bool,
}

impl Saved {
    fn save(session: &Session, theirs: bool) -> Result<Self, SessionError> {
        let pickle =
            serde_json::to_vec(&session.pickle()).map_err(|e| SessionError::Bad(e.to_string()))?;
        Ok(Saved { pickle, theirs })
    }

    fn load(&self) -> Result<Session, SessionError> {
        let pickle: SessionPickle =
            serde_json::from_slice(&self.pickle).map_err(|e| SessionError::Bad(e.to_string()))?;
        Ok(Session::from_pickle(pickle))
    }
}

/// A decrypted content.
pub struct Decrypted {
    /// The plaintext.
    pub plain: Zeroizing<Vec<u8>>,
    /// True if the message started a session (the contact's first on it).
    pub started: bool,
}

/// The Olm sessions with one contact.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Sessions {
    /// Oldest first.
    list: Vec<Saved>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.list.len())
    }
}

fn key(bytes: [u8; 32]) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(bytes)
}

impl Sessions {
    /// Sessions kept.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there are none yet.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The session both sides send on (see the module's rule), given our identity key, and
    /// its index.
    fn sending(
        &self,
        mine: &[u8; 32],
        theirs: &[u8; 32],
    ) -> Result<Option<(usize, Session)>, SessionError> {
        let they_are_smaller = theirs < mine;
        let loaded = self
            .list
            .iter()
            .map(Saved::load)
            .collect::<Result<Vec<_>, _>>()?;
        let answered = |by_smaller: bool| {
            loaded.iter().zip(&self.list).position(|(s, saved)| {
                s.has_received_message() && (!by_smaller || saved.theirs == they_are_smaller)
            })
        };
        let at = answered(true)
            .or_else(|| answered(false))
            .or(self.list.len().checked_sub(1));
        Ok(at.and_then(|i| loaded.into_iter().nth(i).map(|s| (i, s))))
    }

    /// Encrypts `content` for `contact`, starting a session from `account` (ours) on the
    /// contact's address's keys if there is none.
    pub fn encrypt(
        &mut self,
        account: &Account,
        contact: &Address,
        content: &[u8],
    ) -> Result<OlmBytes, SessionError> {
        let me = account.curve25519_key().to_bytes();
        let (at, mut session) = match self.sending(&me, &contact.olm_key)? {
            Some((i, s)) => (Some(i), s),
            None => {
                let made = account
                    .create_outbound_session(
                        SessionConfig::version_1(),
                        key(contact.olm_key),
                        key(contact.prekey),
                    )
                    .map_err(|e| SessionError::Bad(e.to_string()))?;
                (None, made)
            }
        };
        let message = session
            .encrypt(content)
            .map_err(|e| SessionError::Bad(e.to_string()))?;
        match at {
            Some(i) => self.list[i] = Saved::save(&session, self.list[i].theirs)?,
            None => self.keep(Saved::save(&session, false)?),
        }
        let (kind, bytes) = message.to_parts();
        Ok(OlmBytes {
            pre_key: kind == 0,
            bytes,
        })
    }

    /// Encrypts one chunk's content for `contact` ([`Sessions::encrypt`] of its bytes).
    pub fn encrypt_content(
        &mut self,
        account: &Account,
        contact: &Address,
        content: &Content,
    ) -> Result<OlmBytes, SessionError> {
        let plain = content
            .to_bytes()
            .ok_or_else(|| SessionError::Bad("a content longer than a chunk holds".into()))?;
        self.encrypt(account, contact, &plain)
    }

    /// Decrypts a chunk's content from `contact`. A pre-key message for no session we have
    /// starts one (with `account`, ours, whose pre-key it names); a failed decryption
    /// changes nothing.
    pub fn decrypt(
        &mut self,
        account: &mut Account,
        contact: &Address,
        olm: &OlmBytes,
    ) -> Result<Decrypted, SessionError> {
        let message = OlmMessage::from_parts(usize::from(!olm.pre_key), &olm.bytes)
            .map_err(|_| SessionError::Undecryptable)?;
        if let OlmMessage::PreKey(p) = &message {
            if p.identity_key() != key(contact.olm_key) {
                return Err(SessionError::KeyChanged);
            }
            let id = p.session_id();
            for i in 0..self.list.len() {
                let mut s = self.list[i].load()?;
                if s.session_id() == id {
                    return self.decrypt_on(i, &mut s, &message);
                }
            }
            return self.start_inbound(account, contact, p);
        }
        for i in 0..self.list.len() {
            let mut s = self.list[i].load()?;
            if let Ok(plain) = self.decrypt_on(i, &mut s, &message) {
                return Ok(plain);
            }
        }
        Err(SessionError::Undecryptable)
    }

    fn decrypt_on(
        &mut self,
        i: usize,
        s: &mut Session,
        message: &OlmMessage,
    ) -> Result<Decrypted, SessionError> {
        let plain = s
            .decrypt(message)
            .map_err(|_| SessionError::Undecryptable)?;
        self.list[i] = Saved::save(s, self.list[i].theirs)?;
        Ok(Decrypted {
            plain: Zeroizing::new(plain),
            started: false,
        })
    }

    fn start_inbound(
        &mut self,
        account: &mut Account,
        contact: &Address,
        p: &PreKeyMessage,
    ) -> Result<Decrypted, SessionError> {
        let made = account
            .create_inbound_session(SessionConfig::version_1(), key(contact.olm_key), p)
            .map_err(|e| match e {
                vodozemac::olm::SessionCreationError::MismatchedIdentityKey(..) => {
                    SessionError::KeyChanged
                }
                _ => SessionError::Undecryptable,
            })?;
        self.keep(Saved::save(&made.session, true)?);
        Ok(Decrypted {
            plain: Zeroizing::new(made.plaintext),
            started: true,
        })
    }

    /// Adds a session, dropping the oldest past [`MAX_SESSIONS`] (never the newest).
    fn keep(&mut self, s: Saved) {
        self.list.push(s);
        while self.list.len() > MAX_SESSIONS {
            self.list.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::account::Account as MailAccount;

    struct Peer {
        account: MailAccount,
        olm: Account,
        address: Address,
    }

    fn peer(outbox: u32) -> Peer {
        let account = MailAccount::generate(&mut rand::rng()).with_outbox(outbox);
        Peer {
            olm: account.olm().expect("olm account"),
            address: account.address().expect("address"),
            account,
        }
    }

    fn send(from: &Peer, s: &mut Sessions, to: &Peer, text: &[u8]) -> OlmBytes {
        s.encrypt(&from.olm, &to.address, text).expect("encrypt")
    }

    #[test]
    fn a_conversation_starts_from_addresses_and_ratchets() {
        let (mut alice, mut bob) = (peer(1), peer(2));
        let (mut a, mut b) = (Sessions::default(), Sessions::default());
        let first = send(&alice, &mut a, &bob, b"hello");
        assert!(first.pre_key);
        let got = b
            .decrypt(&mut bob.olm, &alice.address, &first)
            .expect("first");
        assert_eq!(&got.plain[..], b"hello");
        assert!(got.started);
        // A replay of the pre-key message opens nothing, and starts no second session.
        assert_eq!(
            b.decrypt(&mut bob.olm, &alice.address, &first).err(),
            Some(SessionError::Undecryptable)
        );
        assert_eq!(b.len(), 1);
        let back = send(&bob, &mut b, &alice, b"hi");
        assert!(!back.pre_key, "an answered session sends normal messages");
        assert_eq!(
            &a.decrypt(&mut alice.olm, &bob.address, &back)
                .expect("back")
                .plain[..],
            b"hi"
        );
        let again = send(&alice, &mut a, &bob, b"so");
        assert!(!again.pre_key);
        assert_eq!(
            &b.decrypt(&mut bob.olm, &alice.address, &again)
                .expect("again")
                .plain[..],
            b"so"
        );
        // Out of order within a chain.
        let (x, y) = (
            send(&alice, &mut a, &bob, b"x"),
            send(&alice, &mut a, &bob, b"y"),
        );
        let open = |b: &mut Sessions, bob: &mut Peer, m: &OlmBytes| {
            b.decrypt(&mut bob.olm, &alice.address, m)
                .expect("opens")
                .plain
                .to_vec()
        };
        assert_eq!(open(&mut b, &mut bob, &y), b"y");
        assert_eq!(open(&mut b, &mut bob, &x), b"x");
        let _ = &mut alice.account;
    }

    /// Forward secrecy: Bob's whole state taken after the conversation (his account and his
    /// sessions) opens none of the messages he received before.
    #[test]
    fn a_stolen_state_opens_no_recorded_message() {
        let (mut alice, mut bob) = (peer(1), peer(2));
        let (mut a, mut b) = (Sessions::default(), Sessions::default());
        let mut recorded = Vec::new();
        for i in 0..6u8 {
            let m = send(&alice, &mut a, &bob, &[i; 40]);
            recorded.push(m.clone());
            b.decrypt(&mut bob.olm, &alice.address, &m)
                .expect("delivered");
            let ack = send(&bob, &mut b, &alice, b"");
            a.decrypt(&mut alice.olm, &bob.address, &ack)
                .expect("answer");
        }
        // The thief's copy: the account as the client state keeps it, and the sessions.
        let mut stolen_olm = bob.account.olm().expect("olm");
        let mut stolen = b.clone();
        for m in &recorded {
            assert!(
                stolen.decrypt(&mut stolen_olm, &alice.address, m).is_err(),
                "a recorded message opened with the stolen state"
            );
        }
        // What Alice sends next, the thief reads: the state is live until the ratchet turns
        // again (no post-compromise claim before that).
        let next = send(&alice, &mut a, &bob, b"next");
        assert!(
            stolen
                .decrypt(&mut stolen_olm, &alice.address, &next)
                .is_ok()
        );
    }

    #[test]
    fn a_changed_identity_key_is_refused() {
        let (alice, mut bob) = (peer(1), peer(2));
        let mallory = peer(1);
        let mut m = Sessions::default();
        // Mallory writes as if it were Alice (same outbox), with its own keys.
        let forged = send(&mallory, &mut m, &bob, b"it is me");
        let mut b = Sessions::default();
        assert_eq!(
            b.decrypt(&mut bob.olm, &alice.address, &forged).err(),
            Some(SessionError::KeyChanged)
        );
        assert!(b.is_empty());
    }

    #[test]
    fn both_starting_at_once_converge_on_one_session() {
        let (mut alice, mut bob) = (peer(1), peer(2));
        let (mut a, mut b) = (Sessions::default(), Sessions::default());
        let from_a = send(&alice, &mut a, &bob, b"a1");
        let from_b = send(&bob, &mut b, &alice, b"b1");
        assert!(from_a.pre_key && from_b.pre_key);
        b.decrypt(&mut bob.olm, &alice.address, &from_a)
            .expect("a1");
        a.decrypt(&mut alice.olm, &bob.address, &from_b)
            .expect("b1");
        assert_eq!((a.len(), b.len()), (2, 2));
        // A few exchanges: both end up sending normal messages on one session.
        let mut last = (from_a, from_b);
        for i in 0..3u8 {
            let m = send(&alice, &mut a, &bob, &[i]);
            let got = b.decrypt(&mut bob.olm, &alice.address, &m).expect("a");
            assert_eq!(&got.plain[..], &[i]);
            let n = send(&bob, &mut b, &alice, &[i]);
            let got = a.decrypt(&mut alice.olm, &bob.address, &n).expect("b");
            assert_eq!(&got.plain[..], &[i]);
            last = (m, n);
        }
        assert!(!last.0.pre_key && !last.1.pre_key);
        let sending = |s: &Sessions, mine: &Peer, theirs: &Peer| {
            s.sending(&mine.address.olm_key, &theirs.address.olm_key)
                .expect("load")
                .expect("one")
                .1
                .session_id()
        };
        assert_eq!(
            sending(&a, &alice, &bob),
            sending(&b, &bob, &alice),
            "both send on the same session"
        );
    }
}
