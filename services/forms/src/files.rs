//! Where attached files live: an `object_store` (a local directory by default), written as a
//! stream with a size cap, hashed, and checked against the declared media type by their first
//! bytes. Nothing is kept of an upload that fails.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
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
        f.debug_struct("FileStore").field("max_bytes", &self.max_bytes).finish()
    }
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
        "application/msword" | "application/vnd.ms-excel" | "application/vnd.ms-powerpoint" => "ole",
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
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
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
            .put_stream("d/1/a", "application/pdf", 1000, 1024, chunks(vec![body[..500].to_vec(), body[500..].to_vec()]))
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
        assert_eq!(leftover, vec!["d/1/a".to_owned()], "nothing of the refused upload is kept");
    }

    #[tokio::test]
    async fn a_type_or_size_lie_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::local(dir.path(), 1024).unwrap();
        let err = store
            .put_stream("k", "application/pdf", 4, 1024, chunks(vec![b"MZ\x90\x00".to_vec()]))
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TypeMismatch { .. }));
        let err = store
            .put_stream("k", "application/pdf", 10, 1024, chunks(vec![b"%PDF-".to_vec()]))
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::SizeMismatch { declared: 10, received: 5 }));
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
