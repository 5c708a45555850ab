//! Where randomness comes from. The core asks a [`Random`] for bytes so tests can be deterministic; the
//! real source is the OS (WASI `random_get` inside Envoy) through ring.

/// The randomness source failed; the caller fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no randomness available")]
pub struct RandomError;

/// A source of cryptographically secure random bytes.
pub trait Random {
    /// Fills `buf` entirely.
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's CSPRNG.
#[derive(Debug)]
pub struct SystemRandom(ring::rand::SystemRandom);

impl SystemRandom {
    /// A handle to the OS generator.
    pub fn new() -> SystemRandom {
        SystemRandom(ring::rand::SystemRandom::new())
    }
}

impl Default for SystemRandom {
    fn default() -> SystemRandom {
        SystemRandom::new()
    }
}

impl Random for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        ring::rand::SecureRandom::fill(&self.0, buf).map_err(|_| RandomError)
    }
}

/// `n` random bytes, base64url without padding.
pub fn token(rng: &dyn Random, n: usize) -> Result<String, RandomError> {
    use base64::Engine as _;
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// `n` random bytes, lowercase hex.
pub fn hex_token(rng: &dyn Random, n: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_random_produces_distinct_tokens() {
        let rng = SystemRandom::new();
        let a = token(&rng, 32).unwrap();
        let b = token(&rng, 32).unwrap();
        assert_eq!(a.len(), 43, "32 bytes are 43 base64url characters");
        assert_ne!(a, b);
        assert_eq!(hex_token(&rng, 4).unwrap().len(), 8);
    }
}
