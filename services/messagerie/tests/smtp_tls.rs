//! The SMTP client against real aiosmtpd servers with TLS: STARTTLS (`smtp+starttls://`) and
//! implicit TLS (`smtps://`), with a private CA given as `MST_SMTP_CA_FILE` would. Certificates
//! are made by `openssl` for the test; an untrusted certificate or a plain client facing a server
//! that requires TLS delivers nothing. Credentials from the URL against a server requiring AUTH.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mst_messagerie::smtp::{Mailer, Outgoing, SendError, SmtpSettings, Transport};
use mst_messagerie::templates::Rendered;

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to make the test certificates");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a `localhost` server certificate it signed.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mst test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aiosmtpd on a free port with `tls_args`, storing mail in `<dir>/<name>/new`.
async fn sink(dir: &Path, name: &str, tls_args: &[&str]) -> (tokio::process::Child, u16) {
    let maildir = dir.join(name);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let port = free_port();
    let child = tokio::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(tls_args)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "aiosmtpd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

fn received(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir.join(name).join("new"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

fn mail(id: &str) -> Outgoing {
    Outgoing {
        to: "marie@example.org".into(),
        message_id: format!("{id}@mst.example"),
        rendered: Rendered {
            template: "dossier_depose".into(),
            subject: "Votre dossier n° 1 a bien été déposé (Démarche)".into(),
            text: "Bonjour,".into(),
            html: "<p>Bonjour,</p>".into(),
        },
    }
}

fn mailer(url: &str, ca: Option<&Path>) -> Mailer {
    let mut settings = SmtpSettings::parse(url, 2).unwrap();
    settings.timeout = Duration::from_secs(3);
    settings.extra_roots_pem = ca.map(|p| std::fs::read(p).unwrap());
    Mailer::new(
        Transport::Smtp(settings),
        "Mois sans tabac <ne-pas-repondre@mst.example>"
            .parse()
            .unwrap(),
    )
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_only_to_a_trusted_server() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let ca = dir.path().join("ca.pem");

    // STARTTLS required by the server.
    let (_starttls, port) = sink(
        dir.path(),
        "starttls",
        &["--tlscert", "server.pem", "--tlskey", "server.key"],
    )
    .await;
    mailer(&format!("smtp+starttls://localhost:{port}"), Some(&ca))
        .send(&mail("a"))
        .await
        .unwrap();
    let got = received(dir.path(), "starttls");
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Message-ID: <a@mst.example>"));
    // Not trusted without the CA: nothing delivered, a transient error (a relay may be fixed).
    let err = mailer(&format!("smtp+starttls://localhost:{port}"), None)
        .send(&mail("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    // A plain client is refused by a server that requires TLS.
    let err = mailer(&format!("smtp://localhost:{port}"), None)
        .send(&mail("c"))
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("530") || format!("{err}").to_lowercase().contains("tls"),
        "{err}"
    );
    assert_eq!(received(dir.path(), "starttls").len(), 1);

    // Implicit TLS (SMTPS).
    let (_smtps, port) = sink(
        dir.path(),
        "smtps",
        &["--smtpscert", "server.pem", "--smtpskey", "server.key"],
    )
    .await;
    let m = mailer(&format!("smtps://localhost:{port}"), Some(&ca));
    m.send(&mail("d")).await.unwrap();
    // A second email through the same mailer (its pooled connection).
    m.send(&mail("e")).await.unwrap();
    assert_eq!(received(dir.path(), "smtps").len(), 2);
    let err = mailer(&format!("smtps://localhost:{port}"), None)
        .send(&mail("f"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert_eq!(received(dir.path(), "smtps").len(), 2);
}

const AUTH_SINK: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"mst" and data.password == b"s3cret:pass"
    return AuthResult(success=ok)

controller = Controller(Mailbox(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]),
                        authenticator=check, auth_required=True, auth_require_tls=False)
controller.start()
while True:
    time.sleep(3600)
"#;

#[tokio::test]
async fn credentials_from_the_url_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("auth");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let port = free_port();
    let _server = tokio::process::Command::new("python3")
        .args(["-c", AUTH_SINK, &port.to_string()])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the AUTH sink did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mailer(&format!("smtp://mst:s3cret%3Apass@127.0.0.1:{port}"), None)
        .send(&mail("g"))
        .await
        .unwrap();
    assert_eq!(received(dir.path(), "auth").len(), 1);
    // aiosmtpd stalls a client whose credentials fail: the send gives up after the timeout
    // instead of hanging the sender, and will be retried.
    let err = mailer(&format!("smtp://mst:wrong@127.0.0.1:{port}"), None)
        .send(&mail("h"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    let err = mailer(&format!("smtp://127.0.0.1:{port}"), None)
        .send(&mail("i"))
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("530"), "{err}");
    assert_eq!(received(dir.path(), "auth").len(), 1);
}
