//! Random ids and bytes from the OS random generator (row ids, token ids and secrets).
//!
//! A leaf module: it imports nothing from this crate. Its one error converts into a `VfsError`
//! (`Internal`) in `error.rs`.

/// The OS random generator failed: nothing can be created safely.
#[derive(Debug, thiserror::Error)]
#[error("the OS random generator failed")]
pub struct RandomFailed;

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, RandomFailed> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| RandomFailed)?;
    Ok(b)
}

/// A random positive 63-bit id (row ids are chosen by the caller, never sequential).
pub(crate) fn random_id() -> Result<i64, RandomFailed> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| RandomFailed)?;
    Ok((u64::from_be_bytes(b) >> 1).max(1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
    }

    #[test]
    fn random_bytes_have_the_length_asked_for() {
        assert_eq!(random_bytes(0).unwrap().len(), 0);
        let a = random_bytes(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_bytes(32).unwrap());
    }
}
