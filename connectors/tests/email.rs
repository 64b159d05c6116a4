//! The e-mail connector against a real SMTP server: aiosmtpd 1.4.6 (scripts/smtp.sh and
//! scripts/smtp_server.py) with STARTTLS or implicit TLS, AUTH required, and a certificate
//! signed by a CA made here. The server saves what it accepts; these tests read it back.
//!
//! Skipped, saying so, only where Python cannot make a virtual environment.

#![allow(clippy::print_stdout)]

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use herald_connectors::email::{EmailConfig, EmailConnector, TlsMode};
use herald_connectors::{Connector, Outcome};
use herald_schemas::{Channel, Dispatch, Priority};
use serde_json::Value;

const USER: &str = "herald";
const PASSWORD: &str = "correct horse battery staple";
const UNSUBSCRIBE: &str =
    "https://example.test/unsubscribe?tenant={tenant}&user={user}&category={category}";

/// A running aiosmtpd; dropping it kills it.
struct SmtpServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned()
}

/// Installs aiosmtpd once per test process: `Ok(false)` when Python cannot make a virtual
/// environment at all (the only reason to skip), an error when it can but the install failed.
fn installed() -> Result<bool, String> {
    static INSTALLED: OnceLock<Result<bool, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let install = Command::new(repo().join("scripts/smtp.sh"))
                .arg("install")
                .output()
                .map_err(|e| format!("scripts/smtp.sh: {e}"))?;
            if install.status.success() {
                return Ok(true);
            }
            let probe = tempfile::tempdir().map_err(|e| e.to_string())?;
            let venv = Command::new("python3")
                .args(["-m", "venv"])
                .arg(probe.path().join("venv"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if venv.is_ok_and(|s| s.success()) {
                Err(format!(
                    "scripts/smtp.sh install failed although python3 -m venv works:\n{}",
                    String::from_utf8_lossy(&install.stderr)
                ))
            } else {
                Ok(false)
            }
        })
        .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes a CA (`ca.pem`) and a certificate for 127.0.0.1 and localhost signed by it
/// (`cert.pem`, `key.pem`) into `dir`.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key.pem");
}

/// Starts aiosmtpd in `mode` (`starttls` or `implicit`) on a free port.
fn start(mode: &str) -> SmtpServer {
    match installed() {
        Ok(true) => {}
        // make test needs python3's venv for the broker too: a machine without it fails
        // here, loudly, rather than passing these tests unrun.
        Ok(false) => panic!("the SMTP tests need `python3 -m venv` (Debian: python3-venv)"),
        Err(e) => panic!("{e}"),
    }
    let dir = tempfile::tempdir().expect("a directory");
    certificates(dir.path());
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).expect("password");
    std::fs::write(dir.path().join("wrong-password"), "hunter2\n").expect("password");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
    let port = free_port();
    let child = Command::new(repo().join("scripts/smtp.sh"))
        .arg("run")
        .arg(dir.path())
        .arg(port.to_string())
        .env("HERALD_SMTP_USER", USER)
        .env("HERALD_SMTP_PASSWORD", PASSWORD)
        .env("HERALD_SMTP_TLS", mode)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("scripts/smtp.sh run");
    let mut server = SmtpServer { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = || std::fs::read_to_string(server.dir.path().join("server.log"));
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the SMTP server exited ({status}): {:?}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no SMTP server after 30 s: {:?}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl SmtpServer {
    fn config(&self, tls: TlsMode) -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            tls,
            username: Some(USER.into()),
            password_file: Some(self.dir.path().join("password")),
            from: "Herald <noreply@herald.test>".into(),
            unsubscribe_url: Some(UNSUBSCRIBE.into()),
            timeout_ms: 10_000,
            ca_file: Some(self.dir.path().join("ca.pem")),
            ..EmailConfig::default()
        }
    }

    fn connector(&self, tls: TlsMode) -> EmailConnector {
        EmailConnector::new(&self.config(tls)).expect("a connector")
    }

    /// Every message the server accepted, in order.
    fn messages(&self) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("messages.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

fn dispatch(delivery_id: &str, address: &str, priority: Priority) -> Dispatch {
    Dispatch {
        delivery_id: delivery_id.into(),
        notification_id: format!("n-{delivery_id}"),
        attempt: 1,
        tenant: "acme & co".into(),
        recipient_user_id: "ana/1".into(),
        category: "billing".into(),
        priority,
        channel: Channel::Email,
        address: address.into(),
        title: "Your invoice <#42>".into(),
        body: "Total: 12 € & taxes\nThank you.".into(),
        action_url: Some("https://example.test/i/42?x=1&y=2".into()),
        requested_at_ms: 1_767_225_600_000,
        not_before_ms: None,
        last_error: None,
    }
}

/// A message as received: its unfolded headers and its parts, decoded.
struct Received {
    headers: Vec<(String, String)>,
    parts: Vec<(String, String)>,
}

impl Received {
    fn parse(data: &str) -> Received {
        let (head, body) = data.split_once("\r\n\r\n").expect("a head and a body");
        let headers = unfold(head);
        let content_type = header(&headers, "Content-Type").expect("Content-Type");
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("a boundary")
            .trim_matches('"');
        let delimiter = format!("--{boundary}");
        let parts = body
            .split(&delimiter)
            .skip(1)
            .filter(|part| !part.starts_with("--"))
            .map(|part| {
                let (head, content) = part
                    .trim_start_matches("\r\n")
                    .split_once("\r\n\r\n")
                    .expect("a part");
                let headers = unfold(head);
                let kind = header(&headers, "Content-Type").expect("a part's type");
                let content = match header(&headers, "Content-Transfer-Encoding").as_deref() {
                    Some("quoted-printable") => quoted_printable(content),
                    _ => content.to_owned(),
                };
                (kind, content.replace("\r\n", "\n"))
            })
            .collect();
        Received { headers, parts }
    }

    fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    fn part(&self, kind: &str) -> &str {
        &self
            .parts
            .iter()
            .find(|(k, _)| k.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} part"))
            .1
    }
}

fn unfold(head: &str) -> Vec<(String, String)> {
    head.replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("a hex byte"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

fn retry_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Retry { reason, .. } => reason,
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_notification_arrives_over_starttls_with_auth_and_a_critical_one_without_unsubscribe() {
    let server = start("starttls");
    let connector = server.connector(TlsMode::Starttls);

    let outcome = connector
        .send(&dispatch(
            "delivery-1",
            "Ana <ana@example.test>",
            Priority::Normal,
        ))
        .await;
    let message_id = "<delivery-1@herald.herald.test>";
    assert_eq!(
        outcome,
        Outcome::Delivered {
            provider_message_id: Some(message_id.into())
        }
    );
    let critical = connector
        .send(&dispatch(
            "delivery-2",
            "bob@example.test",
            Priority::Critical,
        ))
        .await;
    assert!(
        matches!(critical, Outcome::Delivered { .. }),
        "{critical:?}"
    );

    let messages = server.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let first = &messages[0];
    assert_eq!(first["mail_from"], "noreply@herald.test");
    assert_eq!(first["rcpt_tos"], serde_json::json!(["ana@example.test"]));
    assert_eq!(first["login"], USER, "authenticated as");
    assert_eq!(first["tls"], true);
    assert_eq!(first["starttls"], true, "upgraded with STARTTLS");
    assert_eq!(messages[1]["starttls"], true);

    let email = Received::parse(first["data"].as_str().expect("data"));
    assert_eq!(
        email.header("From").as_deref(),
        Some("Herald <noreply@herald.test>")
    );
    assert_eq!(
        email.header("To").as_deref(),
        Some("Ana <ana@example.test>")
    );
    assert_eq!(
        email.header("Subject").as_deref(),
        Some("Your invoice <#42>")
    );
    assert_eq!(email.header("Message-ID").as_deref(), Some(message_id));
    assert_eq!(
        email.header("Herald-Delivery-Id").as_deref(),
        Some("delivery-1")
    );
    assert_eq!(
        email.header("List-Unsubscribe").as_deref(),
        Some(
            "<https://example.test/unsubscribe?tenant=acme%20%26%20co&user=ana%2F1&category=billing>"
        )
    );
    assert_eq!(
        email.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(email.header("Date").is_some());
    assert!(
        email
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("multipart/alternative"))
    );
    assert_eq!(email.parts.len(), 2);
    let text = email.part("text/plain");
    assert!(
        text.starts_with("Your invoice <#42>\n\nTotal: 12 € & taxes\nThank you.\n"),
        "{text}"
    );
    assert!(text.contains("https://example.test/i/42?x=1&y=2"), "{text}");
    let html = email.part("text/html");
    assert!(html.contains("<h1>Your invoice &lt;#42&gt;</h1>"), "{html}");
    assert!(
        html.contains("<p>Total: 12 € &amp; taxes<br>\nThank you.</p>"),
        "{html}"
    );
    assert!(
        html.contains(r#"<a href="https://example.test/i/42?x=1&amp;y=2">"#),
        "{html}"
    );

    let critical = Received::parse(messages[1]["data"].as_str().expect("data"));
    assert_eq!(critical.header("To").as_deref(), Some("bob@example.test"));
    assert_eq!(critical.header("List-Unsubscribe"), None);
    assert_eq!(critical.header("List-Unsubscribe-Post"), None);
    assert!(!critical.part("text/html").contains("Unsubscribe"));
    assert_eq!(
        critical.header("Message-ID").as_deref(),
        Some("<delivery-2@herald.herald.test>")
    );
}

#[tokio::test]
async fn refusals_are_read_for_what_they_refused() {
    let server = start("starttls");
    let connector = server.connector(TlsMode::Starttls);

    let unknown = connector
        .send(&dispatch("d-550", "nobody@invalid.test", Priority::Normal))
        .await;
    match &unknown {
        Outcome::InvalidToken(reason) => {
            assert!(reason.contains("550"), "{reason}");
            assert!(
                reason.contains("User unknown"),
                "the server's words: {reason}"
            );
        }
        other => panic!("550 to RCPT TO: {other:?}"),
    }
    let later = connector
        .send(&dispatch("d-451", "later@example.test", Priority::Normal))
        .await;
    let reason = retry_reason(&later);
    assert!(
        reason.contains("451") && reason.contains("try again later"),
        "{reason}"
    );
    let spam = connector
        .send(&dispatch("d-554", "spam@example.test", Priority::Normal))
        .await;
    match &spam {
        Outcome::Failed(reason) => assert!(reason.contains("554"), "{reason}"),
        other => panic!("554 after the message: {other:?}"),
    }
    // After three refusals (each followed by RSET), the connector still delivers.
    let fine = connector
        .send(&dispatch("d-ok", "ana@example.test", Priority::Normal))
        .await;
    assert!(matches!(fine, Outcome::Delivered { .. }), "{fine:?}");
    let messages = server.messages();
    assert_eq!(
        messages.len(),
        1,
        "only the last was accepted: {messages:?}"
    );
    assert_eq!(
        messages[0]["rcpt_tos"],
        serde_json::json!(["ana@example.test"])
    );
}

#[tokio::test]
async fn a_wrong_password_or_an_untrusted_certificate_is_retried_naming_the_cause() {
    let server = start("starttls");
    let wrong = EmailConnector::new(&EmailConfig {
        password_file: Some(server.dir.path().join("wrong-password")),
        ..server.config(TlsMode::Starttls)
    })
    .expect("a connector");
    let outcome = wrong
        .send(&dispatch("d-auth", "ana@example.test", Priority::Normal))
        .await;
    let reason = retry_reason(&outcome);
    assert!(reason.contains("535"), "{reason}");
    assert!(reason.contains("username and password"), "{reason}");

    let untrusting = EmailConnector::new(&EmailConfig {
        ca_file: None,
        ..server.config(TlsMode::Starttls)
    })
    .expect("a connector");
    let outcome = untrusting
        .send(&dispatch("d-tls", "ana@example.test", Priority::Normal))
        .await;
    let reason = retry_reason(&outcome);
    assert!(
        reason.contains("TLS failed: invalid peer certificate"),
        "{reason}"
    );

    assert!(server.messages().is_empty());
    // The right settings get through.
    let right = server
        .connector(TlsMode::Starttls)
        .send(&dispatch("d-right", "ana@example.test", Priority::Normal))
        .await;
    assert!(matches!(right, Outcome::Delivered { .. }), "{right:?}");
}

#[tokio::test]
async fn a_notification_arrives_over_implicit_tls() {
    let server = start("implicit");
    let outcome = server
        .connector(TlsMode::Implicit)
        .send(&dispatch("d-465", "ana@example.test", Priority::Normal))
        .await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["tls"], true);
    assert_eq!(
        messages[0]["starttls"], false,
        "encrypted from the first byte"
    );
    assert_eq!(messages[0]["login"], USER);
    // Speaking STARTTLS to an implicit-TLS port gets no greeting it understands: retried.
    let confused = EmailConnector::new(&EmailConfig {
        timeout_ms: 2_000,
        ..server.config(TlsMode::Starttls)
    })
    .expect("a connector")
    .send(&dispatch("d-587", "ana@example.test", Priority::Normal))
    .await;
    retry_reason(&confused);
}

#[tokio::test]
async fn an_unparseable_address_is_invalid_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let config = EmailConfig {
        host: "127.0.0.1".into(),
        port: Some(listener.local_addr().expect("address").port()),
        from: "noreply@herald.test".into(),
        ..EmailConfig::default()
    };
    let connector = EmailConnector::new(&config).expect("a connector");
    for address in [
        "not an address",
        "ana@",
        "ana@example.test, bob@example.test",
        "",
    ] {
        let outcome = connector
            .send(&dispatch("d-bad", address, Priority::Normal))
            .await;
        assert!(
            matches!(outcome, Outcome::InvalidToken(_)),
            "{address}: {outcome:?}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the connector connected: {other:?}"),
    }
}

/// A server that accepts connections and says nothing.
#[tokio::test]
async fn a_silent_server_is_retried_after_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = EmailConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        from: "noreply@herald.test".into(),
        timeout_ms: 300,
        ..EmailConfig::default()
    };
    let started = Instant::now();
    let outcome = EmailConnector::new(&config)
        .expect("a connector")
        .send(&dispatch("d-silent", "ana@example.test", Priority::Normal))
        .await;
    let reason = retry_reason(&outcome);
    assert!(reason.contains("no answer within 300 ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
    silent.abort();
}

/// A plain SMTP server in a few lines, offering AUTH but not STARTTLS: it accepts everything,
/// and its task returns every line it read once the client leaves.
async fn plain_server() -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("a connection");
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut read_lines = Vec::new();
        let mut in_data = false;
        let _ = write.write_all(b"220 plain.test ESMTP\r\n").await;
        while let Ok(Some(line)) = lines.next_line().await {
            let answer: &[u8] = if in_data {
                in_data = line != ".";
                if in_data {
                    b""
                } else {
                    b"250 2.0.0 queued\r\n"
                }
            } else if line.starts_with("EHLO") {
                b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n"
            } else if line == "DATA" {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line == "QUIT" {
                b"221 bye\r\n"
            } else {
                b"250 ok\r\n"
            };
            read_lines.push(line);
            if write.write_all(answer).await.is_err() {
                break;
            }
        }
        read_lines
    });
    (port, task)
}

/// A server (or a man in the middle) that does not offer STARTTLS: nothing is sent in the clear.
#[tokio::test]
async fn no_starttls_offered_means_nothing_sent_in_the_clear() {
    let (port, server) = plain_server().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("password"), PASSWORD).expect("password");
    let config = EmailConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        username: Some(USER.into()),
        password_file: Some(dir.path().join("password")),
        from: "noreply@herald.test".into(),
        timeout_ms: 5_000,
        ..EmailConfig::default()
    };
    let outcome = EmailConnector::new(&config)
        .expect("a connector")
        .send(&dispatch("d-plain", "ana@example.test", Priority::Normal))
        .await;
    let reason = retry_reason(&outcome);
    assert!(reason.contains("does not offer STARTTLS"), "{reason}");
    let lines = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the client leaves")
        .expect("the server");
    assert!(
        lines.iter().all(|c| c.starts_with("EHLO") || c == "QUIT"),
        "only EHLO and QUIT in the clear: {lines:?}"
    );
}

/// `tls = "none"` (this machine only) and no username: a plain conversation without AUTH.
#[tokio::test]
async fn without_tls_and_username_a_local_server_gets_a_plain_conversation() {
    let (port, server) = plain_server().await;
    let config = EmailConfig {
        host: "localhost".into(),
        port: Some(port),
        tls: TlsMode::None,
        from: "noreply@herald.test".into(),
        timeout_ms: 5_000,
        ..EmailConfig::default()
    };
    let connector = EmailConnector::new(&config).expect("a connector");
    let outcome = connector
        .send(&dispatch("d-local", "ana@example.test", Priority::Normal))
        .await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    drop(connector);
    let lines = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the client leaves")
        .expect("the server");
    let commands: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| {
            l.starts_with("EHLO") || l.starts_with("MAIL") || l.starts_with("RCPT") || *l == "DATA"
        })
        .collect();
    assert_eq!(commands.len(), 4, "{lines:?}");
    assert_eq!(commands[1], "MAIL FROM:<noreply@herald.test>");
    assert_eq!(commands[2], "RCPT TO:<ana@example.test>");
    assert!(!lines.iter().any(|l| l.starts_with("AUTH")), "{lines:?}");
    assert!(
        lines.contains(&"Subject: Your invoice <#42>".to_owned()),
        "{lines:?}"
    );
}
