//! The policy version: a short digest of the sources, so that every attempt
//! can record which policy set it ran under.

use sha2::{Digest, Sha256};

use crate::model::PolicyVersion;
use crate::policy::SourceFile;

/// Hex digits kept: enough to tell policy sets apart at a glance.
const VERSION_LEN: usize = 12;

/// The first 12 hex digits of SHA-256 over each source's file name, a NUL
/// and its contents, in load order. The file name, not the whole path, so
/// that `validate policies/` and `run --policies ./policies` print the same
/// version for the same files.
pub fn policy_version(sources: &[SourceFile]) -> PolicyVersion {
    let mut hasher = Sha256::new();
    for source in sources {
        let name = source
            .path
            .file_name()
            .map_or_else(|| source.path.to_string_lossy(), |n| n.to_string_lossy());
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(source.text.as_bytes());
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    PolicyVersion(hex[..VERSION_LEN].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Format;

    fn source(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text, Format::Yaml)
    }

    #[test]
    fn version_is_twelve_hex_digits_of_names_and_contents() {
        let v = policy_version(&[source("policies/a.yaml", "flows: {}\n")]);
        assert_eq!(v.0.len(), 12);
        assert!(v.0.bytes().all(|b| b.is_ascii_hexdigit()));
        // sha256("a.yaml\0flows: {}\n")
        let expected: String = Sha256::digest(b"a.yaml\0flows: {}\n")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v.0, expected[..12]);
        assert_eq!(
            v,
            policy_version(&[source("./elsewhere/a.yaml", "flows: {}\n")])
        );
        assert_ne!(v, policy_version(&[source("b.yaml", "flows: {}\n")]));
        assert_ne!(v, policy_version(&[source("a.yaml", "flows: {} \n")]));
    }
}
