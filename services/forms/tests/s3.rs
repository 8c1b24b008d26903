//! The attachments store on a real S3-compatible server: moto (`pip install "moto[server]"`),
//! started here on a free port. Configured as the service configures it (`MST_FILES_URL` and the
//! `AWS_*` variables), it uploads a 12 MiB file in 5 MiB parts, reads it back byte for byte, copies
//! and deletes; refused uploads (too large, lying about their type or size, interrupted) leave
//! neither an object nor a pending multipart upload.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use mst_forms::files::{FileError, FileStore};
use mst_kit::config::Env;
use sha2::{Digest as _, Sha256};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "mst-files";

/// A moto S3 server, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start moto_server ({e}): this test needs an S3-compatible server — pip install \"moto[server]\" (.ci/tools.sh: ensure_moto)"
            ),
        };
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(&moto.url).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start ({status}); is port {port} taken?");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not ready at {} after 30 s",
                moto.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let created = http
            .put(format!("{}/{BUCKET}", moto.url))
            .send()
            .await
            .expect("PUT bucket");
        assert!(
            created.status().is_success(),
            "creating the bucket: {}",
            created.status()
        );
        moto
    }

    /// Every key of the bucket (objects), and the keys of pending multipart uploads.
    async fn contents(&self) -> (Vec<String>, Vec<String>) {
        let http = reqwest::Client::new();
        let get = |query: &'static str| {
            let http = http.clone();
            let url = format!("{}/{BUCKET}?{query}", self.url);
            async move {
                let r = http.get(&url).send().await.expect("list");
                assert!(r.status().is_success(), "GET {url}: {}", r.status());
                keys(&r.text().await.expect("list body"))
            }
        };
        (get("list-type=2").await, get("uploads").await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `<Key>` elements of an S3 XML listing.
fn keys(xml: &str) -> Vec<String> {
    let mut out: Vec<String> = xml
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect();
    out.sort();
    out
}

/// `len` bytes that look like a PDF: its signature, then pseudo-random bytes (no two parts alike).
fn pdf_like(len: usize, seed: u64) -> Vec<u8> {
    let mut body = b"%PDF-1.7\n".to_vec();
    let mut x = seed | 1;
    while body.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.truncate(len);
    body
}

/// `body` in uneven chunks, as a client stream delivers it.
fn chunks(body: &[u8]) -> impl Stream<Item = Result<Bytes, String>> + Unpin + use<> {
    let parts: Vec<Result<Bytes, String>> = body
        .chunks(100_003)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts)
}

async fn read_all(store: &FileStore, key: &str) -> Vec<u8> {
    let mut stream = store.get_stream(key).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

fn store_on(moto: &Moto, prefix: &str) -> FileStore {
    let mut env = Env::from_map([
        ("MST_FILES_URL", format!("s3://{BUCKET}/{prefix}")),
        ("AWS_ENDPOINT_URL", moto.url.clone()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "mst-test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "mst-test-secret".to_owned()),
        ("AWS_REGION", "eu-west-3".to_owned()),
        ("MST_MAX_FILE_BYTES", (20 * MIB).to_string()),
    ]);
    let settings = mst_forms::Settings::from_env(&mut env);
    env.finish().expect("valid settings");
    assert!(
        settings.files_s3.is_some(),
        "MST_FILES_URL selects the S3 store"
    );
    mst_forms::file_store(&settings).expect("S3 store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_round_trip_through_s3_and_refused_uploads_leave_nothing() {
    let moto = Moto::start().await;
    let store = store_on(&moto, "dossiers");
    assert_eq!(store.max_bytes, 20 * MIB as u64);
    let limit = store.max_bytes;

    // 12 MiB: three parts of a multipart upload (5 + 5 + 2 MiB).
    let body = pdf_like(12 * MIB, 42);
    let stored = store
        .put_stream(
            "d/1/scan.pdf",
            "application/pdf",
            body.len() as u64,
            limit,
            chunks(&body),
        )
        .await
        .expect("upload");
    assert_eq!(stored.size, body.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&body)));
    let head = reqwest::Client::new()
        .head(format!("{}/{BUCKET}/dossiers/d/1/scan.pdf", moto.url))
        .send()
        .await
        .expect("HEAD");
    let etag = head
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "uploaded in 3 parts, ETag {etag}"
    );
    assert_eq!(
        moto.contents().await,
        (vec!["dossiers/d/1/scan.pdf".to_owned()], vec![]),
        "stored under the prefix of MST_FILES_URL, no upload left pending"
    );
    assert!(
        read_all(&store, "d/1/scan.pdf").await == body,
        "read back byte for byte"
    );

    // Copy, then delete the original.
    store
        .copy("d/1/scan.pdf", "d/2/scan.pdf")
        .await
        .expect("copy");
    store.delete("d/1/scan.pdf").await;
    assert!(
        read_all(&store, "d/2/scan.pdf").await == body,
        "the copy is the same bytes"
    );
    assert!(
        matches!(
            store.get_stream("d/1/scan.pdf").await,
            Err(object_store::Error::NotFound { .. })
        ),
        "the original is gone"
    );
    let after_copy = (vec!["dossiers/d/2/scan.pdf".to_owned()], vec![]);
    assert_eq!(moto.contents().await, after_copy);

    // Too large: refused after a first 5 MiB part went up; the multipart upload is aborted.
    let big = pdf_like(8 * MIB, 7);
    let err = store
        .put_stream(
            "d/3/big.pdf",
            "application/pdf",
            big.len() as u64,
            6 * MIB as u64,
            chunks(&big),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, FileError::TooLarge(l) if l == 6 * MIB as u64),
        "{err:?}"
    );
    assert_eq!(
        moto.contents().await,
        after_copy,
        "nothing of the oversize upload is kept"
    );

    // A type lie: an executable declared as a PDF.
    let mut exe = pdf_like(6 * MIB, 9);
    exe[..4].copy_from_slice(b"MZ\x90\x00");
    let err = store
        .put_stream(
            "d/3/lie.pdf",
            "application/pdf",
            exe.len() as u64,
            limit,
            chunks(&exe),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::TypeMismatch { .. }), "{err:?}");
    assert_eq!(
        moto.contents().await,
        after_copy,
        "nothing of the lying upload is kept"
    );

    // A size lie, noticed at the end, once a part is up.
    let short = pdf_like(6 * MIB, 11);
    let err = store
        .put_stream(
            "d/3/short.pdf",
            "application/pdf",
            7 * MIB as u64,
            limit,
            chunks(&short),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::SizeMismatch { .. }), "{err:?}");
    assert_eq!(
        moto.contents().await,
        after_copy,
        "nothing of the short upload is kept"
    );

    // The client stream breaks after 6 MiB.
    let cut = pdf_like(6 * MIB, 13);
    let broken = chunks(&cut).chain(futures::stream::iter([Err("client went away".to_owned())]));
    let err = store
        .put_stream(
            "d/3/cut.pdf",
            "application/pdf",
            9 * MIB as u64,
            limit,
            broken,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::Stream(_)), "{err:?}");
    assert_eq!(
        moto.contents().await,
        after_copy,
        "nothing of the interrupted upload is kept"
    );

    // A small file (one part, under the 5 MiB minimum) and no prefix.
    let bare = store_on(&moto, "");
    let small = pdf_like(1000, 3);
    bare.put_stream("small.pdf", "application/pdf", 1000, limit, chunks(&small))
        .await
        .expect("small upload");
    assert!(read_all(&bare, "small.pdf").await == small);
    assert_eq!(
        moto.contents().await,
        (
            vec!["dossiers/d/2/scan.pdf".to_owned(), "small.pdf".to_owned()],
            vec![]
        )
    );
}
