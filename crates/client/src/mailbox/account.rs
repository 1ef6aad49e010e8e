//! An account as the client state keeps it: the identity's secret and the capability of its
//! inbox. The inbox id (public, in the address) is the one the capability names
//! ([`StoreId::of`]); storage creates the inbox on its owner's first drain, and only under that
//! id, so someone who knows the address cannot create it first.

use serde::{Deserialize, Serialize};
use shroud_proto::{Capability, Grant, StoreId};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::identity::{AddressError, Identity};

/// The secret half of a mailbox account.
///
/// # Security
/// Whoever holds it reads this account's mail and sends as it. Wiped on drop; kept only in the
/// encrypted client state.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Account {
    #[serde(with = "serde_bytes")]
    identity: Vec<u8>,
    capability: [u8; 32],
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
    /// A fresh account.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut capability = [0u8; 32];
        rng.fill_bytes(&mut capability);
        let id = Identity::generate(rng).with_inbox(StoreId::of(&Capability(capability)).0);
        Account {
            identity: id.to_secret().to_vec(),
            capability,
        }
    }

    /// The identity.
    pub fn identity(&self) -> Result<Identity, AddressError> {
        let bytes: [u8; 48] = self
            .identity
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::Key)?;
        let id = Identity::from_secret(&bytes);
        let mut bytes = bytes;
        bytes.zeroize();
        id
    }

    /// The inbox and its capability.
    pub fn inbox(&self) -> Result<Grant, AddressError> {
        Ok(Grant {
            store: StoreId(self.identity()?.address().inbox),
            capability: Capability(self.capability),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_round_trips_and_owns_its_inbox() {
        let a = Account::generate(&mut rand::rng());
        let id = a.identity().unwrap();
        assert_eq!(a.inbox().unwrap().store.0, id.address().inbox);
        assert!(
            a.inbox().unwrap().names_its_store(),
            "the id its capability names"
        );
        let b: Account = bincode::deserialize(&bincode::serialize(&a).unwrap()).unwrap();
        assert_eq!(b.identity().unwrap().address(), id.address());
        assert_eq!(format!("{a:?}"), "Account(<redacted>)");
    }
}
