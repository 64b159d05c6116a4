//! What an SMTP conversation's end means, pure.
//!
//! | what happened                                          | outcome                        |
//! |--------------------------------------------------------|--------------------------------|
//! | the message accepted after DATA                        | Delivered (id: the Message-ID) |
//! | 550, 551 or 553 to RCPT TO (no such user, bad address) | InvalidToken, the server's text|
//! | any other 5xx to RCPT TO, to DATA or to the message    | Failed, the server's text      |
//! | any 4xx                                                | Retry                          |
//! | 530, 534, 535, 538 (authentication), at any step       | Retry                          |
//! | 5xx to the greeting, EHLO, STARTTLS, AUTH or MAIL FROM | Retry                          |
//! | no connection, a broken one, a timeout                 | Retry                          |
//! | a TLS failure (certificate, handshake)                 | Retry                          |
//! | no STARTTLS offered, no AUTH mechanism in common       | Retry                          |
//! | the server cannot take what the message needs         | Failed                         |
//!
//! Authentication failures (535 and its kin) and the other refusals before the first recipient
//! are the same for every message: they say the operator's settings (credentials, sender, TLS,
//! CA) are wrong, not that this message or address is. They are retried with the server's words,
//! so fixing the settings lets the waiting deliveries through instead of dead-lettering them at
//! once; the retry budget still dead-letters them if nobody does.
//!
//! A timeout after the message was sent may hide a delivery, so the retry may deliver a second
//! copy. A resend of the same attempt (a replay after a crash) carries the same Message-ID; a
//! retry is a new attempt with a new delivery id, hence a new Message-ID.

use std::fmt;
use std::time::Duration;

use crate::Outcome;

/// Where in the conversation something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Connecting, the greeting and EHLO (for implicit TLS, the handshake too).
    Connect,
    /// STARTTLS and the handshake after it.
    StartTls,
    /// AUTH.
    Auth,
    /// Reusing an idle connection (NOOP).
    Reuse,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// The DATA command.
    Data,
    /// The message itself and the server's answer to it.
    Message,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connecting",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::Reuse => "reusing a connection",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::Message => "the message",
        })
    }
}

/// How a conversation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with a negative reply.
    Reply {
        /// To what.
        step: Step,
        /// The reply code (4xx or 5xx).
        code: u16,
        /// The reply's text (every line, joined).
        text: String,
    },
    /// The whole call took longer than allowed.
    Timeout {
        /// What it was waiting for.
        step: Step,
        /// The limit.
        after: Duration,
    },
    /// No connection, or it broke (refused, reset, closed, an unreadable reply).
    Connection {
        /// When.
        step: Step,
        /// What the network said.
        reason: String,
    },
    /// The TLS handshake failed (an untrusted certificate, another name, no common version).
    Tls {
        /// What rustls said.
        reason: String,
    },
    /// The server lacks what the settings need: STARTTLS, an AUTH mechanism Herald speaks.
    Settings {
        /// What is missing.
        reason: String,
    },
    /// The server cannot take this message (an internationalised address without SMTPUTF8).
    Unsupported {
        /// What it lacks.
        reason: String,
    },
}

/// The outcome of a message the server accepted: delivered, with its Message-ID.
pub fn delivered(message_id: &str) -> Outcome {
    Outcome::Delivered {
        provider_message_id: Some(message_id.to_owned()),
    }
}

/// The outcome of `failure` (the table above).
pub fn classify(failure: &Failure) -> Outcome {
    match failure {
        Failure::Reply { step, code, text } => reply(*step, *code, text),
        Failure::Timeout { step, after } => Outcome::retry(format!(
            "SMTP: no answer within {} ms ({step})",
            after.as_millis()
        )),
        Failure::Connection { step, reason } => {
            Outcome::retry(format!("SMTP connection failed ({step}): {reason}"))
        }
        Failure::Tls { reason } => Outcome::retry(format!(
            "SMTP TLS failed: {reason} (check [provider.email] tls, port and ca_file)"
        )),
        Failure::Settings { reason } => {
            Outcome::retry(format!("SMTP: {reason} (check [provider.email])"))
        }
        Failure::Unsupported { reason } => Outcome::Failed(format!("SMTP: {reason}")),
    }
}

fn reply(step: Step, code: u16, text: &str) -> Outcome {
    let said = format!("the mail server answered {code} {text} to {step}");
    match (step, code) {
        (_, 530 | 534 | 535 | 538) => Outcome::retry(format!(
            "{said} (authentication: check [provider.email] username and password)"
        )),
        (Step::RcptTo, 550 | 551 | 553) => Outcome::InvalidToken(said),
        (_, 400..=499) => Outcome::retry(said),
        (Step::Connect | Step::StartTls | Step::Auth | Step::Reuse | Step::MailFrom, _) => {
            Outcome::retry(format!(
                "{said} (refused before any recipient: check [provider.email])"
            ))
        }
        (_, 500..=599) => Outcome::Failed(said),
        // A positive or unknown code where a negative one was expected: ask again later.
        _ => Outcome::retry(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_to(step: Step, code: u16) -> Outcome {
        classify(&Failure::Reply {
            step,
            code,
            text: "5.1.1 <x@example.com>: nope".into(),
        })
    }

    fn is_retry(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Retry { after: None, .. })
    }

    #[test]
    fn an_unknown_recipient_is_an_invalid_address_with_the_servers_words() {
        for code in [550, 551, 553] {
            assert_eq!(
                reply_to(Step::RcptTo, code),
                Outcome::InvalidToken(format!(
                    "the mail server answered {code} 5.1.1 <x@example.com>: nope to RCPT TO"
                ))
            );
        }
    }

    #[test]
    fn other_permanent_refusals_of_the_recipient_or_message_fail() {
        for (step, code) in [
            (Step::RcptTo, 552),
            (Step::RcptTo, 554),
            (Step::Data, 554),
            (Step::Message, 550),
            (Step::Message, 552),
            (Step::Message, 554),
        ] {
            let outcome = reply_to(step, code);
            assert!(
                matches!(outcome, Outcome::Failed(_)),
                "{step} {code}: {outcome:?}"
            );
        }
    }

    #[test]
    fn transient_replies_retry_at_every_step() {
        for step in [
            Step::Connect,
            Step::Auth,
            Step::MailFrom,
            Step::RcptTo,
            Step::Message,
        ] {
            for code in [421, 450, 451, 452, 454] {
                assert!(is_retry(&reply_to(step, code)), "{step} {code}");
            }
        }
    }

    #[test]
    fn authentication_failures_retry_naming_the_settings() {
        for code in [530, 534, 535, 538] {
            for step in [Step::Auth, Step::MailFrom, Step::RcptTo] {
                let outcome = reply_to(step, code);
                assert!(is_retry(&outcome), "{step} {code}");
                let Outcome::Retry { reason, .. } = outcome else {
                    unreachable!()
                };
                assert!(reason.contains("username and password"), "{reason}");
            }
        }
    }

    #[test]
    fn refusals_before_any_recipient_retry() {
        for step in [Step::Connect, Step::StartTls, Step::Auth, Step::MailFrom] {
            for code in [500, 550, 553, 554] {
                assert!(is_retry(&reply_to(step, code)), "{step} {code}");
            }
        }
    }

    #[test]
    fn no_answer_a_broken_connection_tls_and_settings_retry() {
        let failures = [
            Failure::Timeout {
                step: Step::Message,
                after: Duration::from_millis(1_500),
            },
            Failure::Connection {
                step: Step::Connect,
                reason: "connection refused".into(),
            },
            Failure::Tls {
                reason: "invalid peer certificate: UnknownIssuer".into(),
            },
            Failure::Settings {
                reason: "the server does not offer STARTTLS".into(),
            },
        ];
        for failure in failures {
            assert!(is_retry(&classify(&failure)), "{failure:?}");
        }
        let Outcome::Retry { reason, .. } = classify(&Failure::Timeout {
            step: Step::Message,
            after: Duration::from_millis(1_500),
        }) else {
            unreachable!()
        };
        assert_eq!(reason, "SMTP: no answer within 1500 ms (the message)");
    }

    #[test]
    fn what_the_server_cannot_take_fails() {
        let outcome = classify(&Failure::Unsupported {
            reason: "the server does not support SMTPUTF8".into(),
        });
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    }

    #[test]
    fn an_accepted_message_is_delivered_under_its_message_id() {
        assert_eq!(
            delivered("<d1@herald.example.com>"),
            Outcome::Delivered {
                provider_message_id: Some("<d1@herald.example.com>".into())
            }
        );
    }
}
