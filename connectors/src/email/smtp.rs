//! The SMTP conversation: connect (STARTTLS, implicit TLS or plain on this machine), log in,
//! then MAIL FROM, RCPT TO, DATA and the message, each step named so that a refusal is read
//! for what it refused ([`super::classify`]). Connections that finished cleanly wait for the
//! next message (at most [`MAX_IDLE`], for at most [`IDLE_FOR`]) and are checked with NOOP
//! before reuse; a connection that failed or ran out of time is closed, never reused.

use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use super::classify::{Failure, Step};

/// Idle connections kept at most.
pub const MAX_IDLE: usize = 16;
/// How long an idle connection is kept (servers drop idle clients after a minute or more).
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// How to reach and enter the server.
pub struct Server {
    /// Host name (and the name its certificate must carry).
    pub host: String,
    /// Port.
    pub port: u16,
    /// How the connection is encrypted: `None` for none, else STARTTLS or implicit TLS.
    pub tls: Option<(TlsParameters, Upgrade)>,
    /// The account, if any.
    pub credentials: Option<Credentials>,
    /// How long one message may take.
    pub timeout: Duration,
}

/// When TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// After STARTTLS.
    Starttls,
    /// At once.
    Implicit,
}

/// A server and its idle connections.
pub struct Smtp {
    server: Server,
    hello: ClientId,
    idle: Arc<Idle>,
}

type Idle = Mutex<Vec<(AsyncSmtpConnection, Instant)>>;

/// How long closing a connection (QUIT) or resetting it (RSET) may take, after the outcome.
const CLOSING: Duration = Duration::from_secs(5);

/// Keeps `conn` for the next message, if there is room.
fn park(idle: &Idle, conn: AsyncSmtpConnection) {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push((conn, Instant::now()));
    }
}

/// Says QUIT and closes `conn`, apart from the caller.
fn close(mut conn: AsyncSmtpConnection) {
    tokio::spawn(tokio::time::timeout(
        CLOSING,
        async move { conn.abort().await },
    ));
}

impl Smtp {
    /// A client of `server`; it connects when the first message is sent.
    pub fn new(server: Server) -> Smtp {
        Smtp {
            server,
            hello: ClientId::default(),
            idle: Arc::default(),
        }
    }

    /// Sends `email` (its formatted bytes) to `envelope`'s recipients within the timeout.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), Failure> {
        let mut step = Step::Connect;
        let timeout = self.server.timeout;
        match tokio::time::timeout(timeout, self.attempt(&mut step, envelope, email)).await {
            Ok(result) => result,
            // The connection went with the dropped future: it is closed, not reused.
            Err(_) => Err(Failure::Timeout {
                step,
                after: timeout,
            }),
        }
    }

    async fn attempt(
        &self,
        step: &mut Step,
        envelope: &Envelope,
        email: &[u8],
    ) -> Result<(), Failure> {
        let mut conn = self.connection(step).await?;
        let result = transaction(&mut conn, step, envelope, email).await;
        match &result {
            Ok(()) => park(&self.idle, conn),
            // A refusal leaves the connection usable once the transaction is reset; that, or
            // closing the connection, happens apart, so the outcome is not kept waiting.
            Err(Failure::Reply { .. }) => {
                let idle = Arc::clone(&self.idle);
                tokio::spawn(tokio::time::timeout(CLOSING, async move {
                    if conn.command(Rset).await.is_ok() {
                        park(&idle, conn);
                    } else {
                        conn.abort().await;
                    }
                }));
            }
            Err(_) => close(conn),
        }
        result
    }

    /// An idle connection that still answers NOOP, or a new one.
    async fn connection(&self, step: &mut Step) -> Result<AsyncSmtpConnection, Failure> {
        while let Some(mut conn) = self.unpark() {
            *step = Step::Reuse;
            if conn.test_connected().await {
                return Ok(conn);
            }
            // It no longer answers: dropping it closes the socket.
        }
        self.open(step).await
    }

    fn unpark(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
            // Too old: dropping it closes it.
            drop(conn);
        }
        None
    }

    /// A new connection: TCP, the greeting and EHLO, TLS as configured, AUTH if configured.
    async fn open(&self, step: &mut Step) -> Result<AsyncSmtpConnection, Failure> {
        let server = &self.server;
        *step = Step::Connect;
        let implicit = match &server.tls {
            Some((parameters, Upgrade::Implicit)) => Some(parameters.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (server.host.as_str(), server.port),
            Some(server.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| failure(Step::Connect, &e))?;
        if let Some((parameters, Upgrade::Starttls)) = &server.tls {
            *step = Step::StartTls;
            if !conn.can_starttls() {
                close(conn);
                return Err(Failure::Settings {
                    reason: format!(
                        "{}:{} does not offer STARTTLS (tls = \"implicit\" for port 465?)",
                        server.host, server.port
                    ),
                });
            }
            conn.starttls(parameters.clone(), &self.hello)
                .await
                .map_err(|e| failure(Step::StartTls, &e))?;
        }
        if let Some(credentials) = &server.credentials {
            *step = Step::Auth;
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            if let Err(e) = conn.auth(&mechanisms, credentials).await {
                close(conn);
                return Err(failure(Step::Auth, &e));
            }
        }
        Ok(conn)
    }
}

/// MAIL FROM, RCPT TO for each recipient, DATA and the message, as lettre's own `send` does,
/// but naming the step that failed.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    step: &mut Step,
    envelope: &Envelope,
    email: &[u8],
) -> Result<(), Failure> {
    let mut options = Vec::new();
    let addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.map(Address::as_ref).any(|a: &str| !a.is_ascii()) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::Unsupported {
                reason: "the address is internationalised and the server lacks SMTPUTF8".into(),
            });
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Failure::Unsupported {
                reason: "the message is not ASCII and the server lacks 8BITMIME".into(),
            });
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    *step = Step::MailFrom;
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(|e| failure(Step::MailFrom, &e))?;
    *step = Step::RcptTo;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new()))
            .await
            .map_err(|e| failure(Step::RcptTo, &e))?;
    }
    *step = Step::Data;
    conn.command(Data)
        .await
        .map_err(|e| failure(Step::Data, &e))?;
    *step = Step::Message;
    conn.message(email)
        .await
        .map_err(|e| failure(Step::Message, &e))?;
    Ok(())
}

/// What lettre's error at `step` was.
fn failure(step: Step, error: &lettre::transport::smtp::Error) -> Failure {
    // lettre keeps a reply's text as the error's source and its own words otherwise.
    let detail = error
        .source()
        .map_or_else(|| error.to_string(), ToString::to_string);
    if let Some(code) = error.status() {
        return Failure::Reply {
            step,
            code: code.to_string().parse().unwrap_or(0),
            text: detail,
        };
    }
    if let Some(tls) = tls_error(error) {
        return Failure::Tls {
            reason: tls.to_string(),
        };
    }
    if error.is_tls() {
        return Failure::Tls {
            reason: chain(error),
        };
    }
    if error.is_client() {
        // "No compatible authentication mechanism was found" and the like.
        return Failure::Settings { reason: detail };
    }
    Failure::Connection {
        step,
        reason: chain(error),
    }
}

/// The rustls error behind `error`, if any (lettre reports a failed handshake as a connection
/// error, with rustls's inside an I/O error).
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        next = e.source();
    }
    None
}

/// An error and its causes, `: `-separated (a cause already in the text is not repeated).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}
