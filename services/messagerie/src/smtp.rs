//! Delivery of composed emails: SMTP through lettre with a small pool of connections, or a local
//! folder (the embedded default when no SMTP server is configured).
//!
//! lettre 0.11.23 never sets TCP_NODELAY and writes the end-of-data marker as a separate small
//! packet, so each message would wait for the server's delayed ACK (~44 ms). We open the
//! `TcpStream` ourselves, set `TCP_NODELAY`, and hand it to lettre
//! (`AsyncSmtpConnection::connect_with_transport`), then upgrade with STARTTLS when configured.
//! Implicit TLS (`smtps://`) uses lettre's own connector (TLS records are not affected the same
//! way, and lettre offers no hook to wrap our stream before the banner).

use std::path::PathBuf;
use std::time::Duration;

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Mutex;

use crate::templates::{Rendered, single_line};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP (`smtp://`): local relays and test sinks only.
    None,
    /// STARTTLS required (`smtp+starttls://`, default port 587).
    StartTls,
    /// Implicit TLS (`smtps://`, default port 465).
    Tls,
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum Transport {
    /// An SMTP relay.
    Smtp(SmtpSettings),
    /// A local folder: each email is written as `<dir>/new/<message-id>.eml`.
    Folder(PathBuf),
}

/// An SMTP relay, parsed from `MST_SMTP_URL`.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Security.
    pub security: Security,
    /// User name and password, if any.
    pub credentials: Option<(String, SecretString)>,
    /// Idle connections kept open (`MST_SMTP_POOL_SIZE`).
    pub pool_size: usize,
    /// Connect and command timeout.
    pub timeout: Duration,
    /// Extra trusted root certificates, PEM (`MST_SMTP_CA_FILE`: a relay with a private CA).
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl SmtpSettings {
    /// Parses `smtp://[user:password@]host[:port]`, `smtp+starttls://…` or `smtps://…`
    /// (user and password percent-encoded).
    pub fn parse(url: &str, pool_size: usize) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let (security, default_port) = match parsed.scheme() {
            "smtp" => (Security::None, 25),
            "smtp+starttls" => (Security::StartTls, 587),
            "smtps" => (Security::Tls, 465),
            other => {
                return Err(format!(
                    "scheme {other:?} is not one of smtp, smtp+starttls, smtps"
                ));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = if parsed.username().is_empty() {
            None
        } else {
            Some((
                decode(parsed.username()),
                SecretString::from(decode(parsed.password().unwrap_or(""))),
            ))
        };
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(default_port),
            security,
            credentials,
            pool_size: pool_size.max(1),
            timeout: Duration::from_secs(30),
            extra_roots_pem: None,
        })
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// May succeed later: connection refused, timeout, 4xx.
    #[error("{0}")]
    Transient(String),
    /// Will not succeed: 5xx rejection, invalid address.
    #[error("{0}")]
    Permanent(String),
}

/// One email ready to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Recipient.
    pub to: String,
    /// Message-ID without brackets.
    pub message_id: String,
    /// Content.
    pub rendered: Rendered,
}

/// Builds the RFC 5322 message: From, To, Subject (one line, RFC 2047-encoded by lettre),
/// Message-ID, Date, and a multipart/alternative text + HTML body in base64.
pub fn compose(from: &Mailbox, mail: &Outgoing) -> Result<(Envelope, Vec<u8>), SendError> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| SendError::Permanent(format!("invalid recipient address: {e}")))?;
    let message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(single_line(&mail.rendered.subject))
        .message_id(Some(format!("<{}>", single_line(&mail.message_id))))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(header::ContentType::TEXT_PLAIN)
                        .header(ContentTransferEncoding::Base64)
                        .body(mail.rendered.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(header::ContentType::TEXT_HTML)
                        .header(ContentTransferEncoding::Base64)
                        .body(mail.rendered.html.clone()),
                ),
        )
        .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
    Ok((message.envelope().clone(), message.formatted()))
}

/// Sends composed emails through the configured transport.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.transport)
            .field("from", &self.from)
            .finish()
    }
}

impl Mailer {
    /// A mailer sending as `from` through `transport`.
    pub fn new(transport: Transport, from: Mailbox) -> Self {
        Self {
            transport,
            from,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The sender address.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Delivers one email.
    pub async fn send(&self, mail: &Outgoing) -> Result<(), SendError> {
        let (envelope, bytes) = compose(&self.from, mail)?;
        match &self.transport {
            Transport::Folder(dir) => write_to_folder(dir, &mail.message_id, &bytes).await,
            Transport::Smtp(settings) => {
                let pooled = self.idle.lock().await.pop();
                let was_pooled = pooled.is_some();
                match self.send_on(settings, pooled, &envelope, &bytes).await {
                    // The relay may have closed an idle connection: try once on a fresh one.
                    Err(SendError::Transient(_)) if was_pooled => {
                        self.send_on(settings, None, &envelope, &bytes).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Sends on `conn` (or a new connection), everything within the configured timeout, and
    /// keeps the connection for the next email when it is still good.
    async fn send_on(
        &self,
        s: &SmtpSettings,
        conn: Option<AsyncSmtpConnection>,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        let attempt = async {
            let mut conn = match conn {
                Some(conn) => conn,
                None => self.connect(s).await?,
            };
            match conn.send(envelope, bytes).await {
                Ok(_) => Ok(conn),
                Err(e) => {
                    conn.abort().await;
                    if e.is_permanent() {
                        Err(SendError::Permanent(format!("rejected by the relay: {e}")))
                    } else {
                        Err(SendError::Transient(format!("SMTP error: {e}")))
                    }
                }
            }
        };
        // A relay that stops answering must not stall the sender.
        let mut conn = tokio::time::timeout(s.timeout, attempt)
            .await
            .map_err(|_| {
                SendError::Transient(format!(
                    "{}:{} did not answer within {:?}",
                    s.host, s.port, s.timeout
                ))
            })??;
        let mut idle = self.idle.lock().await;
        if idle.len() < s.pool_size && !conn.has_broken() {
            idle.push(conn);
        } else {
            drop(idle);
            let _ = tokio::time::timeout(s.timeout, conn.quit()).await;
        }
        Ok(())
    }

    /// Closes the pooled connections politely.
    pub async fn close(&self) {
        for mut conn in self.idle.lock().await.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
        }
    }

    async fn connect(&self, s: &SmtpSettings) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", s.host, s.port))
        };
        let tls = || {
            let mut builder = TlsParameters::builder(s.host.clone());
            if let Some(pem) = &s.extra_roots_pem {
                builder = builder.add_root_certificate(
                    Certificate::from_pem(pem)
                        .map_err(|e| SendError::Permanent(format!("MST_SMTP_CA_FILE: {e}")))?,
                );
            }
            builder
                .build()
                .map_err(|e| SendError::Permanent(e.to_string()))
        };
        let mut conn = match s.security {
            Security::Tls => tokio::time::timeout(
                s.timeout,
                AsyncSmtpConnection::connect_tokio1(
                    (s.host.as_str(), s.port),
                    Some(s.timeout),
                    &self.hello,
                    Some(tls()?),
                    None,
                ),
            )
            .await
            .map_err(|e| transient("connecting to", &e))?
            .map_err(|e| transient("connecting to", &e))?,
            Security::None | Security::StartTls => {
                let stream = tokio::time::timeout(
                    s.timeout,
                    tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
                )
                .await
                .map_err(|e| transient("connecting to", &e))?
                .map_err(|e| transient("connecting to", &e))?;
                // See the module comment: without it every message waits for a delayed ACK.
                stream
                    .set_nodelay(true)
                    .map_err(|e| transient("configuring the connection to", &e))?;
                let mut conn = tokio::time::timeout(
                    s.timeout,
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
                )
                .await
                .map_err(|e| transient("greeting", &e))?
                .map_err(|e| transient("greeting", &e))?;
                if s.security == Security::StartTls {
                    conn.starttls(tls()?, &self.hello)
                        .await
                        .map_err(|e| transient("STARTTLS with", &e))?;
                }
                conn
            }
        };
        if let Some((user, password)) = &s.credentials {
            let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| {
                    if e.is_permanent() {
                        SendError::Permanent(format!("authentication refused: {e}"))
                    } else {
                        transient("authenticating with", &e)
                    }
                })?;
        }
        Ok(conn)
    }
}

async fn write_to_folder(dir: &std::path::Path, id: &str, bytes: &[u8]) -> Result<(), SendError> {
    let io = |e: std::io::Error| SendError::Transient(format!("writing to {}: {e}", dir.display()));
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    tokio::fs::create_dir_all(&tmp).await.map_err(io)?;
    tokio::fs::create_dir_all(&new).await.map_err(io)?;
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let staged = tmp.join(format!("{name}.eml"));
    tokio::fs::write(&staged, bytes).await.map_err(io)?;
    tokio::fs::rename(&staged, new.join(format!("{name}.eml")))
        .await
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_smtp_each_email_lands_once_in_the_local_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(
            Transport::Folder(dir.path().to_path_buf()),
            "Mois sans tabac <ne-pas-repondre@mst.example>"
                .parse()
                .unwrap(),
        );
        let mail = Outgoing {
            to: "marie@example.org".into(),
            message_id: "0123abcd@mst.example".into(),
            rendered: Rendered {
                template: "t".into(),
                subject: "Votre dossier n° 1 a bien été déposé (Démarche)".into(),
                text: "corps".into(),
                html: "<p>corps</p>".into(),
            },
        };
        // Sent twice (a retry after a crash): still one file, named by the Message-ID.
        mailer.send(&mail).await.unwrap();
        mailer.send(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("new"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1);
        let raw = std::fs::read_to_string(files[0].path()).unwrap();
        assert!(raw.contains("Message-ID: <0123abcd@mst.example>"), "{raw}");
        assert!(raw.contains("To: marie@example.org"), "{raw}");
    }

    #[test]
    fn smtp_urls_give_security_port_and_credentials() {
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525", 4).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("127.0.0.1", 2525, Security::None)
        );
        assert!(s.credentials.is_none());
        let s = SmtpSettings::parse("smtp+starttls://u%40x:p%3Ass@relay.example", 4).unwrap();
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        let (user, password) = s.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("u@x", "p:ss"));
        assert_eq!(
            SmtpSettings::parse("smtps://relay.example", 1)
                .unwrap()
                .port,
            465
        );
        assert!(SmtpSettings::parse("http://relay.example", 1).is_err());
        assert!(SmtpSettings::parse("nonsense", 1).is_err());
    }

    #[test]
    fn composed_headers_stay_intact_whatever_the_subject() {
        let mail = Outgoing {
            to: "marie@example.org".into(),
            message_id: "abc@mst-dossiers".into(),
            rendered: Rendered {
                template: "t".into(),
                subject: "Démarche\r\nBcc: evil@example.org".into(),
                text: "corps".into(),
                html: "<p>corps</p>".into(),
            },
        };
        let from: Mailbox = "Mois sans tabac <ne-pas-repondre@mst.example>"
            .parse()
            .unwrap();
        let (envelope, bytes) = compose(&from, &mail).unwrap();
        let raw = String::from_utf8(bytes).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert_eq!(envelope.to().len(), 1);
        assert!(head.contains("Message-ID: <abc@mst-dossiers>"), "{head}");
        assert!(
            compose(
                &from,
                &Outgoing {
                    to: "x\r\n@y".into(),
                    ..mail
                }
            )
            .is_err()
        );
    }
}
