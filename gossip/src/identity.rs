//! The node's ed25519 identity: created once, kept in the data dir.

use libp2p::identity::Keypair;

/// A node identity (an ed25519 key pair) and the peer id it gives.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
}

/// Why stored identity bytes are unusable.
#[derive(Debug, thiserror::Error)]
#[error("identity key is not a valid ed25519 key: {0}")]
pub struct IdentityError(String);

impl Identity {
    /// A fresh identity from the operating system's randomness.
    pub fn generate() -> Self {
        Identity {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// The identity whose secret key is `seed` (the simulation derives
    /// seeds from its RNG so peer ids are reproducible).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Identity {
            keypair: Keypair::ed25519_from_bytes(seed).expect("any 32 bytes are an ed25519 secret"),
        }
    }

    /// Reads the form [`Identity::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let keypair = Keypair::from_protobuf_encoding(bytes)
            .map_err(|error| IdentityError(error.to_string()))?;
        if keypair.key_type() != libp2p::identity::KeyType::Ed25519 {
            return Err(IdentityError(format!("key type {:?}", keypair.key_type())));
        }
        Ok(Identity { keypair })
    }

    /// The secret key in libp2p's protobuf encoding, for the data dir.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.keypair
            .to_protobuf_encoding()
            .expect("ed25519 keys always encode")
    }

    /// The peer id, base58.
    pub fn peer_name(&self) -> String {
        self.keypair.public().to_peer_id().to_base58()
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_bytes() {
        let identity = Identity::generate();
        let restored = Identity::from_bytes(&identity.to_bytes()).unwrap();
        assert_eq!(identity.peer_name(), restored.peer_name());
        assert!(identity.peer_name().starts_with("12D3Koo"));
    }

    #[test]
    fn seeds_give_stable_peer_ids() {
        assert_eq!(
            Identity::from_seed([7; 32]).peer_name(),
            Identity::from_seed([7; 32]).peer_name()
        );
        assert_ne!(
            Identity::from_seed([7; 32]).peer_name(),
            Identity::from_seed([8; 32]).peer_name()
        );
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(Identity::from_bytes(b"definitely not a key").is_err());
        assert!(Identity::from_bytes(&[]).is_err());
    }
}
