//! Where attached files live: an `object_store` (a local directory by default, an S3-compatible
//! bucket when `MST_FILES_URL` is set: [`S3Config`]), written as a
//! stream with a size cap, hashed, and checked against the declared media type by their first
//! bytes. Nothing is kept of an upload that fails.

use std::sync::Arc;

use crate::config::Env;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt as _, WriteMultipart};
use sha2::{Digest as _, Sha256};

/// Default cap of one file (20 MB).
pub const DEFAULT_MAX_BYTES: u64 = 20 * 1024 * 1024;

/// Media types accepted when a field does not list its own.
pub const DEFAULT_TYPES: &[&str] = &[
    "application/pdf",
    "image/jpeg",
    "image/png",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/msword",
    "application/vnd.ms-excel",
    "text/plain",
    "text/csv",
];

/// Why storing a file failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// More bytes than allowed.
    #[error("file exceeds {0} bytes")]
    TooLarge(u64),
    /// The content does not match the declared media type.
    #[error("content does not match {declared}")]
    TypeMismatch {
        /// Declared type.
        declared: String,
    },
    /// The number of bytes received differs from the declared size.
    #[error("received {received} bytes, {declared} declared")]
    SizeMismatch {
        /// Declared.
        declared: u64,
        /// Received.
        received: u64,
    },
    /// The client stream failed.
    #[error("upload interrupted: {0}")]
    Stream(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// A stored file's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Key in the store.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// A stream of stored bytes.
pub type ByteStream = futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>;

/// The file store.
#[derive(Clone)]
pub struct FileStore {
    store: Arc<dyn ObjectStore>,
    /// Service-wide cap of one file.
    pub max_bytes: u64,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// The `AWS_*` variables read through the service's settings, so that the embedded runner and
/// tests can set them; `AmazonS3Builder::from_env` reads every other `AWS_*` variable of the
/// process (web identity, container credentials, encryption…). Of two names of one setting, the
/// later wins (`AWS_ENDPOINT_URL` over `AWS_ENDPOINT`, `AWS_REGION` over `AWS_DEFAULT_REGION`).
pub const S3_VARIABLES: &[&str] = &[
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

/// The variable naming the bucket.
pub const FILES_URL: &str = "MST_FILES_URL";

/// A configuration problem of the S3 store: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct S3ConfigError {
    /// The variable to fix.
    pub var: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn problem(var: &'static str, problem: impl Into<String>) -> S3ConfigError {
    S3ConfigError {
        var,
        problem: problem.into(),
    }
}

/// An S3-compatible bucket (AWS, MinIO, Garage, Scaleway, OVH…): `MST_FILES_URL` =
/// `s3://bucket` or `s3://bucket/prefix`, and the `AWS_*` variables. With `AWS_ENDPOINT_URL`
/// (an S3-compatible server) requests are path-style (`endpoint/bucket/key`) unless
/// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
#[derive(Clone)]
pub struct S3Config {
    url: String,
    options: Vec<(AmazonS3ConfigKey, String)>,
}

impl std::fmt::Debug for S3Config {
    // Option values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_ref()).collect();
        f.debug_struct("S3Config")
            .field("url", &self.url)
            .field("options", &keys)
            .finish()
    }
}

impl S3Config {
    /// Reads `MST_FILES_URL` and [`S3_VARIABLES`]: `None` when `MST_FILES_URL` is unset (the
    /// local directory is used) or invalid — the problem, naming the variable, is then recorded
    /// in `env`, which makes the service exit at start.
    pub fn from_env(env: &mut Env) -> Option<Self> {
        let url = env.raw(FILES_URL)?.trim().to_owned();
        let mut options = Vec::new();
        for var in S3_VARIABLES {
            if let Some(value) = env.raw(var) {
                match var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    Ok(key) => options.push((key, value.trim().to_owned())),
                    Err(e) => env.issue(var, e.to_string()),
                }
            }
        }
        let config = Self { url, options };
        match config.build() {
            Ok(_) => Some(config),
            Err(e) => {
                env.issue(e.var, e.problem);
                None
            }
        }
    }

    /// A bucket at `url` (`s3://bucket[/prefix]`) with these options over the process's
    /// `AWS_*` variables.
    pub fn new(
        url: impl Into<String>,
        options: impl IntoIterator<Item = (AmazonS3ConfigKey, String)>,
    ) -> Self {
        Self {
            url: url.into(),
            options: options.into_iter().collect(),
        }
    }

    /// The bucket URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store, every setting checked (no request is made).
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>, S3ConfigError> {
        let expected =
            "expected s3://bucket or s3://bucket/prefix (the server goes in AWS_ENDPOINT_URL)";
        let Some(rest) = self.url.strip_prefix("s3://") else {
            return Err(problem(
                FILES_URL,
                format!("{expected}, got {:?}", self.url),
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(problem(
                FILES_URL,
                "must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        if !valid_bucket(bucket) {
            return Err(problem(
                FILES_URL,
                format!(
                    "{bucket:?} is not a bucket name (3 to 63 of a-z 0-9 . -, first and last a letter or digit); {expected}"
                ),
            ));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            None
        } else if prefix.contains(['?', '#']) {
            return Err(problem(
                FILES_URL,
                format!("{expected}, without query or fragment"),
            ));
        } else {
            Some(
                Path::parse(prefix)
                    .map_err(|e| problem(FILES_URL, format!("invalid prefix {prefix:?}: {e}")))?,
            )
        };

        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in &self.options {
            builder = builder.with_config(*key, value);
        }
        let builder = builder.with_url(format!("s3://{bucket}"));

        let get = |key: AmazonS3ConfigKey| {
            builder
                .get_config_value(&key)
                .filter(|v| !v.trim().is_empty())
        };
        let truthy = |v: Option<String>| {
            v.is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "on" | "yes" | "y"
                )
            })
        };
        let endpoint = get(AmazonS3ConfigKey::Endpoint);
        if let Some(endpoint) = &endpoint {
            let bad = |why: String| {
                problem(
                    "AWS_ENDPOINT_URL",
                    format!("expected http(s)://host[:port], got {endpoint:?}: {why}"),
                )
            };
            let uri: tonic::codegen::http::Uri =
                endpoint.parse().map_err(|e| bad(format!("{e}")))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("no host".to_owned()));
            }
            match uri.scheme_str() {
                Some("https") => {}
                Some("http")
                    if truthy(get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))) => {}
                Some("http") => {
                    return Err(problem(
                        "AWS_ALLOW_HTTP",
                        format!("must be true to reach {endpoint} without TLS"),
                    ));
                }
                _ => return Err(bad("the scheme must be http or https".to_owned())),
            }
        }
        let key_id = get(AmazonS3ConfigKey::AccessKeyId);
        let secret = get(AmazonS3ConfigKey::SecretAccessKey);
        match (&key_id, &secret) {
            (Some(_), None) => {
                return Err(problem(
                    "AWS_SECRET_ACCESS_KEY",
                    "required with AWS_ACCESS_KEY_ID",
                ));
            }
            (None, Some(_)) => {
                return Err(problem(
                    "AWS_ACCESS_KEY_ID",
                    "required with AWS_SECRET_ACCESS_KEY",
                ));
            }
            _ => {}
        }
        // Without keys object_store falls back to web identity, container credentials or the
        // instance metadata service: AWS only. An S3-compatible server needs its keys.
        let other_credentials = [
            AmazonS3ConfigKey::WebIdentityTokenFile,
            AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
            AmazonS3ConfigKey::ContainerCredentialsFullUri,
        ]
        .into_iter()
        .any(|k| get(k).is_some());
        if endpoint.is_some()
            && key_id.is_none()
            && !other_credentials
            && !truthy(get(AmazonS3ConfigKey::SkipSignature))
        {
            return Err(problem(
                "AWS_ACCESS_KEY_ID",
                "required with AWS_ENDPOINT_URL (an S3-compatible server)",
            ));
        }

        // One rustls crypto provider for the whole process (ring), before the HTTP client exists.
        crate::install_crypto_provider();
        let store = builder.build().map_err(|e| {
            problem(
                FILES_URL,
                format!("cannot configure the S3 store (AWS_* variables): {e}"),
            )
        })?;
        Ok(match prefix {
            Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
            None => Arc::new(store),
        })
    }
}

/// S3 bucket naming rules (the ones every S3-compatible server enforces).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The family of a media type, as its first bytes show it.
fn family_of_declared(content_type: &str) -> &'static str {
    match content_type {
        "application/pdf" => "pdf",
        "image/jpeg" => "jpeg",
        "image/png" => "png",
        t if t.starts_with("application/vnd.openxmlformats-officedocument.")
            || t.starts_with("application/vnd.oasis.opendocument.")
            || t == "application/zip" =>
        {
            "zip"
        }
        "application/msword" | "application/vnd.ms-excel" | "application/vnd.ms-powerpoint" => {
            "ole"
        }
        t if t.starts_with("text/") => "text",
        _ => "unknown",
    }
}

/// The family the first bytes of a file belong to.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(b"%PDF-") {
        "pdf"
    } else if head.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        "png"
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "jpeg"
    } else if head.starts_with(b"PK\x03\x04") {
        "zip"
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        "ole"
    } else if !head.contains(&0) && (std::str::from_utf8(head).is_ok() || head.len() >= 512) {
        "text"
    } else {
        "unknown"
    }
}

/// Whether content starting with `head` may be stored as `declared`.
pub fn content_matches(declared: &str, head: &[u8]) -> bool {
    let want = family_of_declared(declared);
    want != "unknown" && sniff(head) == want
}

impl FileStore {
    /// The store of `s3` when configured, else the local directory `dir`.
    pub fn from_config(
        s3: Option<&S3Config>,
        dir: &std::path::Path,
        max_bytes: u64,
    ) -> anyhow::Result<Self> {
        match s3 {
            Some(s3) => Self::s3(s3, max_bytes),
            None => Self::local(dir, max_bytes),
        }
    }

    /// A store in an S3-compatible bucket.
    pub fn s3(config: &S3Config, max_bytes: u64) -> anyhow::Result<Self> {
        let store = config.build()?;
        tracing::info!(
            url = config.url(),
            "attachments are stored in an S3-compatible bucket"
        );
        Ok(Self { store, max_bytes })
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            max_bytes,
        })
    }

    /// Streams `chunks` to a new object under `key`, at most `limit` bytes and exactly
    /// `declared_size`, whose first bytes must match `content_type`. On any failure the partial
    /// object is removed.
    pub async fn put_stream<S>(
        &self,
        key: &str,
        content_type: &str,
        declared_size: u64,
        limit: u64,
        mut chunks: S,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let path = Path::from(key);
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
        let mut hasher = Sha256::new();
        let mut head: Vec<u8> = Vec::with_capacity(512);
        let mut size: u64 = 0;
        let failure = loop {
            match chunks.next().await {
                None => break None,
                Some(Err(e)) => break Some(FileError::Stream(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > limit {
                        break Some(FileError::TooLarge(limit));
                    }
                    if head.len() < 512 {
                        let take = (512 - head.len()).min(chunk.len());
                        head.extend_from_slice(&chunk[..take]);
                        // The head is complete: refuse a type lie now rather than after
                        // sending the whole file to the store.
                        if head.len() == 512 && !content_matches(content_type, &head) {
                            break Some(FileError::TypeMismatch {
                                declared: content_type.to_owned(),
                            });
                        }
                    }
                    hasher.update(&chunk);
                    if let Err(e) = writer.wait_for_capacity(4).await {
                        break Some(FileError::Store(e));
                    }
                    writer.put(chunk);
                }
            }
        };
        let failure = failure.or_else(|| {
            if size != declared_size {
                Some(FileError::SizeMismatch {
                    declared: declared_size,
                    received: size,
                })
            } else if !content_matches(content_type, &head) {
                Some(FileError::TypeMismatch {
                    declared: content_type.to_owned(),
                })
            } else {
                None
            }
        });
        if let Some(e) = failure {
            let _ = writer.abort().await;
            let _ = self.store.delete(&path).await;
            return Err(e);
        }
        writer.finish().await?;
        Ok(Stored {
            key: key.to_owned(),
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The content of `key`, as a stream of chunks.
    pub async fn get_stream(&self, key: &str) -> Result<ByteStream, object_store::Error> {
        Ok(self.store.get(&Path::from(key)).await?.into_stream())
    }

    /// Copies `from` to `to`.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), object_store::Error> {
        self.store.copy(&Path::from(from), &Path::from(to)).await
    }

    /// Removes `key` (best effort: logged when it fails).
    pub async fn delete(&self, key: &str) {
        if let Err(e) = self.store.delete(&Path::from(key)).await {
            tracing::warn!(key, error = %e, "could not remove a stored file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    #[test]
    fn media_types_are_recognised_by_their_first_bytes() {
        assert!(content_matches("application/pdf", b"%PDF-1.7\n"));
        assert!(!content_matches("application/pdf", b"\x89PNG\r\n\x1a\n"));
        assert!(content_matches("image/png", b"\x89PNG\r\n\x1a\nrest"));
        assert!(content_matches("image/jpeg", &[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(content_matches(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            b"PK\x03\x04"
        ));
        assert!(!content_matches("text/plain", b"MZ\x00\x00"));
        assert!(!content_matches("application/x-msdownload", b"MZ"));
    }

    #[tokio::test]
    async fn a_stream_is_stored_with_its_hash_and_an_oversize_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::local(dir.path(), 1024).unwrap();
        let mut body = b"%PDF-1.4\n".to_vec();
        body.resize(1000, b'x');
        let stored = store
            .put_stream(
                "d/1/a",
                "application/pdf",
                1000,
                1024,
                chunks(vec![body[..500].to_vec(), body[500..].to_vec()]),
            )
            .await
            .unwrap();
        assert_eq!(stored.size, 1000);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&body)));

        let mut big = b"%PDF-1.4\n".to_vec();
        big.resize(2000, b'x');
        let err = store
            .put_stream("d/1/b", "application/pdf", 2000, 1024, chunks(vec![big]))
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TooLarge(1024)));
        let leftover: Vec<_> = walk(dir.path());
        assert_eq!(
            leftover,
            vec!["d/1/a".to_owned()],
            "nothing of the refused upload is kept"
        );
    }

    #[tokio::test]
    async fn a_type_or_size_lie_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::local(dir.path(), 1024).unwrap();
        let err = store
            .put_stream(
                "k",
                "application/pdf",
                4,
                1024,
                chunks(vec![b"MZ\x90\x00".to_vec()]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TypeMismatch { .. }));
        let err = store
            .put_stream(
                "k",
                "application/pdf",
                10,
                1024,
                chunks(vec![b"%PDF-".to_vec()]),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FileError::SizeMismatch {
                declared: 10,
                received: 5
            }
        ));
        assert!(walk(dir.path()).is_empty());
    }

    /// The problems `MST_FILES_URL` with these variables makes the service exit with.
    fn s3_issues(vars: &[(&str, &str)]) -> Result<Option<S3Config>, String> {
        let mut env = Env::from_map(vars.iter().copied());
        let config = S3Config::from_env(&mut env);
        env.finish().map(|()| config).map_err(|e| e.to_string())
    }

    #[test]
    fn the_s3_store_is_configured_by_mst_files_url_and_the_aws_variables() {
        assert!(
            s3_issues(&[]).unwrap().is_none(),
            "unset: the local directory"
        );
        let endpoint = [
            ("AWS_ENDPOINT_URL", "http://minio:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2-value"),
        ];
        for url in ["s3://mst-files", "s3://mst-files/", "s3://mst.files-1/a/b/"] {
            let mut vars = vec![("MST_FILES_URL", url)];
            vars.extend(endpoint);
            let config = s3_issues(&vars).unwrap().expect("S3");
            assert_eq!(config.url(), url);
            let shown = format!("{config:?}");
            assert!(!shown.contains("hunter2"), "no secret in {shown}");
        }
        let aws = s3_issues(&[
            ("MST_FILES_URL", "s3://mst-files"),
            ("AWS_REGION", "eu-west-3"),
        ]);
        assert!(
            aws.unwrap().is_some(),
            "AWS itself: credentials may come from the instance"
        );

        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("MST_FILES_URL", "/var/lib/files")],
                "MST_FILES_URL: expected s3://bucket",
            ),
            (
                &[("MST_FILES_URL", "https://s3.example.org/b")],
                "MST_FILES_URL: expected s3://bucket",
            ),
            (
                &[("MST_FILES_URL", "s3://")],
                "MST_FILES_URL: \"\" is not a bucket name",
            ),
            (
                &[("MST_FILES_URL", "s3://My_Bucket")],
                "MST_FILES_URL: \"My_Bucket\" is not a bucket name",
            ),
            (
                &[("MST_FILES_URL", "s3://id:key@bucket")],
                "MST_FILES_URL: must not hold credentials",
            ),
            (
                &[("MST_FILES_URL", "s3://bucket/a//b")],
                "MST_FILES_URL: invalid prefix",
            ),
            (
                &[("MST_FILES_URL", "s3://bucket/a?x=1")],
                "MST_FILES_URL: expected s3://bucket",
            ),
            (
                &[
                    ("MST_FILES_URL", "s3://bucket"),
                    ("AWS_ENDPOINT_URL", "http://minio:9000"),
                    ("AWS_ACCESS_KEY_ID", "id"),
                    ("AWS_SECRET_ACCESS_KEY", "k"),
                ],
                "AWS_ALLOW_HTTP: must be true to reach http://minio:9000 without TLS",
            ),
            (
                &[
                    ("MST_FILES_URL", "s3://bucket"),
                    ("AWS_ENDPOINT_URL", "minio:9000"),
                    ("AWS_ACCESS_KEY_ID", "id"),
                    ("AWS_SECRET_ACCESS_KEY", "k"),
                ],
                "AWS_ENDPOINT_URL: expected http(s)://host[:port]",
            ),
            (
                &[
                    ("MST_FILES_URL", "s3://bucket"),
                    ("AWS_ENDPOINT_URL", "https://s3.fr-par.scw.cloud"),
                ],
                "AWS_ACCESS_KEY_ID: required with AWS_ENDPOINT_URL",
            ),
            (
                &[
                    ("MST_FILES_URL", "s3://bucket"),
                    ("AWS_ACCESS_KEY_ID", "id"),
                ],
                "AWS_SECRET_ACCESS_KEY: required with AWS_ACCESS_KEY_ID",
            ),
            (
                &[
                    ("MST_FILES_URL", "s3://bucket"),
                    ("AWS_ALLOW_HTTP", "maybe"),
                ],
                "MST_FILES_URL: cannot configure the S3 store",
            ),
        ];
        for (vars, expected) in cases {
            let err = s3_issues(vars).expect_err(expected);
            assert!(
                err.contains(expected),
                "{vars:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_type_lie_is_refused_at_the_first_512_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::local(dir.path(), 1 << 20).unwrap();
        let mut exe = b"MZ\x90\x00".to_vec();
        exe.resize(600, 0);
        // The stream would fail after its head: the refusal comes first.
        let parts = futures::stream::iter(vec![Ok(Bytes::from(exe)), Err("never read".to_owned())]);
        let err = store
            .put_stream("k", "application/pdf", 600, 1 << 20, parts)
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TypeMismatch { .. }), "{err:?}");
        assert!(walk(dir.path()).is_empty());
    }

    fn walk(root: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}
