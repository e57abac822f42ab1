//! The one error type of a run: what was being done, and what went wrong.
//!
//! Every failure a person reads names the action (with the method and URL, or the
//! file), what was expected and what came back. The Kubernetes status code is kept as
//! a value so `act` can tell "blocked by a disruption budget" from "the API is broken".

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// What we were doing, e.g. `list pods (GET https://…/pods?limit=500)`.
    pub doing: String,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// The server answered with a status outside 2xx; `message` is the server's own
    /// explanation (a Kubernetes `Status.message`, a Prometheus `error`) or a body excerpt.
    Status { code: u16, message: String },
    /// No answer: connection refused, TLS refused, timeout, name not resolved.
    Transport(String),
    /// An answer that is not what the API promises.
    Malformed(String),
    /// A local file could not be read or written.
    Io(String),
    /// The inputs were read fine but the run cannot go on (no pods matched, no metrics).
    Refused(String),
}

impl Error {
    pub fn new(doing: impl Into<String>, cause: Cause) -> Error {
        Error {
            doing: doing.into(),
            cause,
        }
    }

    pub fn refused(doing: impl Into<String>, why: impl Into<String>) -> Error {
        Error::new(doing, Cause::Refused(why.into()))
    }

    pub fn io(doing: impl Into<String>, err: &std::io::Error) -> Error {
        Error::new(doing, Cause::Io(err.to_string()))
    }

    /// This error with every occurrence of `secret` replaced by `[redacted]`. A server
    /// may echo a token back, in its error message or in a field that fails to parse,
    /// and an error is logged and exported; a secret never may be.
    pub fn redact(self, secret: &str) -> Error {
        if secret.is_empty() {
            return self;
        }
        let r = |s: String| s.replace(secret, "[redacted]");
        let cause = match self.cause {
            Cause::Status { code, message } => Cause::Status {
                code,
                message: r(message),
            },
            Cause::Transport(s) => Cause::Transport(r(s)),
            Cause::Malformed(s) => Cause::Malformed(r(s)),
            Cause::Io(s) => Cause::Io(r(s)),
            Cause::Refused(s) => Cause::Refused(r(s)),
        };
        Error {
            doing: r(self.doing),
            cause,
        }
    }

    /// The HTTP status, when the server answered with one outside 2xx.
    pub fn status(&self) -> Option<u16> {
        match self.cause {
            Cause::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Status { code, message } if message.is_empty() => {
                write!(f, "{}: expected a 2xx answer, got {code}", self.doing)
            }
            Cause::Status { code, message } => {
                write!(f, "{}: expected a 2xx answer, got {code}: {message}", self.doing)
            }
            Cause::Transport(why) => write!(f, "{}: no answer: {why}", self.doing),
            Cause::Malformed(why) => write!(f, "{}: unexpected answer: {why}", self.doing),
            Cause::Io(why) => write!(f, "{}: {why}", self.doing),
            Cause::Refused(why) => write!(f, "{}: {why}", self.doing),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_error_names_the_action_the_code_and_the_servers_message() {
        let e = Error::new(
            "list pods (GET https://10.0.0.1/api/v1/namespaces/ns/pods?limit=500)",
            Cause::Status {
                code: 403,
                message: "pods is forbidden".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "list pods (GET https://10.0.0.1/api/v1/namespaces/ns/pods?limit=500): expected a 2xx answer, got 403: pods is forbidden"
        );
        assert_eq!(e.status(), Some(403));
        assert_eq!(Error::refused("x", "y").status(), None);
    }

    #[test]
    fn a_secret_echoed_by_a_server_is_redacted_everywhere() {
        let token = "eyJhbGciOiJSUzI1NiJ9.s3cr3t";
        let e = Error::new(
            format!("list pods (GET https://h/{token})"),
            Cause::Status {
                code: 401,
                message: format!("invalid bearer token {token}, and again {token}"),
            },
        )
        .redact(token);
        assert_eq!(
            e.to_string(),
            "list pods (GET https://h/[redacted]): expected a 2xx answer, got 401: invalid bearer token [redacted], and again [redacted]"
        );
        for cause in [
            Cause::Transport(token.into()),
            Cause::Malformed(token.into()),
            Cause::Io(token.into()),
            Cause::Refused(token.into()),
        ] {
            let e = Error::new("x", cause).redact(token);
            assert!(!e.to_string().contains(token), "{e}");
        }
        assert_eq!(Error::refused("a", "b").redact(""), Error::refused("a", "b"));
    }
}
