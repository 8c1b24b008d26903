//! A gRPC client for any method of the contracts, driven by the descriptors compiled in
//! `mst-proto`: requests are written in the proto3 JSON mapping and answers read back as JSON.
//! The authorization matrix and the bad-input catalogue use it to reach every RPC without one
//! hand-written call per method.

use std::collections::HashMap;

use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::Value;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Passes encoded messages through unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

/// Encoder half of [`Raw`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// Decoder half of [`Raw`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The descriptors of every contract.
pub fn pool() -> DescriptorPool {
    DescriptorPool::decode(mst_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// Every public gRPC method of the four services: `package.Service/Method`.
pub fn all_methods(pool: &DescriptorPool) -> Vec<String> {
    pool.services()
        .filter(|s| s.package_name().starts_with("mst."))
        .flat_map(|s| {
            s.methods()
                .map(|m| format!("{}/{}", s.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One message (or, for a client stream, each message) written as JSON.
pub enum Body {
    /// A JSON document (an array of documents for a client-streaming method).
    Json(String),
    /// Already encoded messages (bytes JSON cannot carry, such as invalid UTF-8, or large
    /// chunks).
    Encoded(Vec<Vec<u8>>),
}

/// Calls any method of the four services.
pub struct RawClient {
    pool: DescriptorPool,
    channels: HashMap<String, Channel>,
}

impl RawClient {
    /// A client of the services at `urls` (service name → `http://addr`).
    pub async fn connect(urls: &[(&str, String)]) -> Self {
        let mut channels = HashMap::new();
        for (name, url) in urls {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
            channels.insert((*name).to_owned(), channel);
        }
        Self {
            pool: pool(),
            channels,
        }
    }

    /// The descriptor of `package.Service/Method`.
    pub fn method(&self, full: &str) -> MethodDescriptor {
        let (service, method) = full.split_once('/').expect("Service/Method");
        self.pool
            .get_service_by_name(service)
            .unwrap_or_else(|| panic!("no service {service}"))
            .methods()
            .find(|m| m.name() == method)
            .unwrap_or_else(|| panic!("no method {full}"))
    }

    /// Encodes `json` as the input of `method` (an array for client streams).
    pub fn encode(&self, method: &MethodDescriptor, json: &str) -> Vec<Vec<u8>> {
        let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let docs = match (method.is_client_streaming(), value) {
            (true, Value::Array(items)) => items,
            (false, v) => vec![v],
            (true, v) => panic!("a client stream takes an array: {v}"),
        };
        docs.into_iter()
            .map(|doc| {
                DynamicMessage::deserialize(method.input(), doc)
                    .unwrap_or_else(|e| panic!("{} request {json}: {e}", method.full_name()))
                    .encode_to_vec()
            })
            .collect()
    }

    /// Calls `full` with `token` (none: anonymous); the answers as JSON (one per streamed
    /// message).
    pub async fn call(
        &self,
        full: &str,
        token: Option<&str>,
        body: Body,
    ) -> Result<Vec<Value>, Status> {
        let method = self.method(full);
        let messages = match body {
            Body::Json(json) => self.encode(&method, &json),
            Body::Encoded(messages) => messages,
        };
        let service = method.parent_service();
        // mst.<svc>.v1 → the service that serves it.
        let owner = service.package_name().split('.').nth(1).unwrap_or_default();
        let channel = self
            .channels
            .get(owner)
            .unwrap_or_else(|| panic!("no channel for {owner}"))
            .clone();
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path =
            PathAndQuery::try_from(format!("/{}/{}", service.full_name(), method.name())).unwrap();
        let auth = |metadata: &mut tonic::metadata::MetadataMap| {
            if let Some(t) = token {
                metadata.insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
        };
        let raw: Vec<Vec<u8>> = match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => {
                let mut r = tonic::Request::new(messages.into_iter().next().unwrap_or_default());
                auth(r.metadata_mut());
                vec![grpc.unary(r, path, Raw).await?.into_inner()]
            }
            (false, true) => {
                let mut r = tonic::Request::new(messages.into_iter().next().unwrap_or_default());
                auth(r.metadata_mut());
                let mut stream = grpc.server_streaming(r, path, Raw).await?.into_inner();
                let mut out = Vec::new();
                while let Some(m) = stream.message().await? {
                    out.push(m);
                }
                out
            }
            (true, false) => {
                let mut r = tonic::Request::new(tokio_stream::iter(messages));
                auth(r.metadata_mut());
                vec![grpc.client_streaming(r, path, Raw).await?.into_inner()]
            }
            (true, true) => panic!("no bidirectional method is expected: {full}"),
        };
        Ok(raw
            .into_iter()
            .map(|bytes| {
                let message = DynamicMessage::decode(method.output(), bytes.as_slice())
                    .expect("a decodable answer");
                serde_json::to_value(&message).expect("JSON answer")
            })
            .collect())
    }
}

/// The first string found under `key` anywhere in `value` (depth first).
pub fn find_str(value: &Value, key: &str) -> Option<String> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get(key) {
                return Some(s.clone());
            }
            map.values().find_map(|v| find_str(v, key))
        }
        Value::Array(items) => items.iter().find_map(|v| find_str(v, key)),
        _ => None,
    }
}
