//! One line for an error and its causes, each cause said once.
//!
//! Many error types write their cause into their own message and also
//! return it as their `source()`; printing the whole chain (`{:#}`) then
//! repeats the same sentence once per layer ("cannot read x.toml: No such
//! file or directory: No such file or directory"). [`chain_message`] walks
//! the chain and leaves out a cause whose text the message already holds.

use std::error::Error;

/// The error's message followed by those of its causes (`: `-separated),
/// leaving out each cause already said by an outer layer.
pub fn chain_message(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading the configuration: {0}")]
    struct Load(#[source] Read);

    #[derive(Debug, thiserror::Error)]
    #[error("starting")]
    struct Start(#[source] Load);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = Start(Load(Read {
            path: "c.toml".into(),
            source: io,
        }));
        assert_eq!(
            chain_message(&err),
            "starting: loading the configuration: cannot read c.toml: No such file"
        );
        assert_eq!(chain_message(&err).matches("No such file").count(), 1);
    }

    #[test]
    fn causes_not_in_the_message_are_kept() {
        let io = std::io::Error::other("disk full");
        let err = Start(Load(Read {
            path: "s.db".into(),
            source: io,
        }));
        let text = chain_message(&err.0);
        assert!(text.ends_with("disk full"), "{text}");
    }
}
