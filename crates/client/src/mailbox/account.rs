//! An account as the client state keeps it: the identity's secret, the capability of its
//! outbox, the outbox key, the outbox's number once storage has made it
//! ([`super::outbox`]), and the Olm account that starts its sessions ([`super::session`]).
//! The address exists only once the number is known.

use serde::{Deserialize, Serialize};
use shroud_proto::Capability;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::identity::{Address, Identity};
use super::row::OutboxKey;

/// The secret half of a mailbox account.
///
/// # Security
/// Whoever holds it reads this account's mail, writes its outbox and sends as it. Wiped on
/// drop; kept only in the encrypted client state.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Account {
    identity: [u8; 32],
    capability: [u8; 32],
    outbox_key: [u8; 32],
    outbox: Option<u32>,
    /// vodozemac's pickle of the Olm account, serialized (JSON).
    #[serde(with = "serde_bytes")]
    olm: Vec<u8>,
    /// Its identity key and pre-key (fallback key), public: they go in the address.
    olm_key: [u8; 32],
    prekey: [u8; 32],
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Account(<redacted>)")
    }
}

impl crate::durable::StateRecord for Account {
    const NAME: &'static str = "account";
}

impl Account {
    /// A fresh account, without an outbox yet.
    /// (The Olm account's keys come from vodozemac's own generator, the operating system's:
    /// it takes no generator of ours.)
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut olm = vodozemac::olm::Account::new();
        // One fallback key, made once and never replaced: it is the pre-key in the address,
        // and vodozemac keeps only the current and the previous one.
        olm.generate_fallback_key();
        let prekey = olm
            .fallback_key()
            .values()
            .next()
            .map_or([0; 32], |k| k.to_bytes());
        let mut a = Account {
            identity: [0; 32],
            capability: [0; 32],
            outbox_key: [0; 32],
            outbox: None,
            olm: serde_json::to_vec(&olm.pickle()).unwrap_or_default(),
            olm_key: olm.curve25519_key().to_bytes(),
            prekey,
        };
        rng.fill_bytes(&mut a.identity);
        rng.fill_bytes(&mut a.capability);
        rng.fill_bytes(&mut a.outbox_key);
        a
    }

    /// The Olm account (it starts inbound sessions on the pre-key), or `None` if its record
    /// does not parse.
    pub fn olm(&self) -> Option<vodozemac::olm::Account> {
        let pickle: vodozemac::olm::AccountPickle = serde_json::from_slice(&self.olm).ok()?;
        Some(vodozemac::olm::Account::from_pickle(pickle))
    }

    /// The identity.
    pub fn identity(&self) -> Identity {
        Identity::from_secret(&self.identity)
    }

    /// The capability that writes the outbox.
    pub fn capability(&self) -> Capability {
        Capability(self.capability)
    }

    /// The outbox key.
    pub fn outbox_key(&self) -> OutboxKey {
        OutboxKey::from_bytes(self.outbox_key)
    }

    /// The outbox's number, once storage made it.
    pub fn outbox(&self) -> Option<u32> {
        self.outbox
    }

    /// The account with its outbox made, as number `outbox`.
    pub fn with_outbox(mut self, outbox: u32) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The shareable address, once the outbox is made.
    pub fn address(&self) -> Option<Address> {
        Some(Address {
            public_key: self.identity().public_key(),
            outbox: self.outbox?,
            outbox_key: self.outbox_key,
            olm_key: self.olm_key,
            prekey: self.prekey,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_round_trips_and_has_an_address_once_its_outbox_is_made() {
        let a = Account::generate(&mut rand::rng());
        assert_eq!(a.address(), None);
        let a = a.with_outbox(12);
        let address = a.address().expect("address");
        assert_eq!(address.outbox, 12);
        assert_eq!(address.public_key, a.identity().public_key());
        let olm = a.olm().expect("olm account");
        assert_eq!(address.olm_key, olm.curve25519_key().to_bytes());
        assert_ne!(address.prekey, [0; 32]);
        let b: Account = bincode::deserialize(&bincode::serialize(&a).unwrap()).unwrap();
        assert_eq!(b.address(), Some(address));
        assert_eq!(format!("{a:?}"), "Account(<redacted>)");
    }
}
