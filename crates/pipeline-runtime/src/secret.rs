//! Secrets that never show up in logs, `--help` or `Debug` output: [`SecretString`] from the
//! `secrecy` crate (redacted `Debug`, no `Display`, zeroed on drop, read only through
//! [`ExposeSecret`]), given directly or, preferably, through a `*_FILE` setting.

use std::path::Path;

pub use secrecy::{ExposeSecret, SecretString};

/// The secret given directly or read from a file (Docker secrets); the file wins. The error
/// names the file, never its content; a trailing newline of the file is not part of the secret.
pub fn resolve(
    value: Option<&SecretString>,
    file: Option<&Path>,
) -> anyhow::Result<Option<SecretString>> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read the secret file {}: {e}", path.display())
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\n', '\r']),
            )))
        }
        None => Ok(value.cloned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_wins_and_debug_is_redacted() {
        let path = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").expect("write");
        let given = SecretString::from("given");
        let s = resolve(Some(&given), Some(&path))
            .expect("read")
            .expect("some");
        assert_eq!(s.expose_secret(), "from-file");
        assert!(!format!("{s:?}").contains("from-file"));
        let s = resolve(Some(&given), None).expect("ok").expect("some");
        assert_eq!(s.expose_secret(), "given");
        let _ = std::fs::remove_file(path);
        let missing = resolve(None, Some(Path::new("/nonexistent/secret"))).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/secret"));
    }
}
