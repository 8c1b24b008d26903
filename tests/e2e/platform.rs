//! Every service starts, answers the standard health check, lists its services over reflection,
//! and drains on shutdown.

use std::time::Duration;

use futures::StreamExt as _;
use mst_e2e::Stack;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn list_services(url: String) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn every_service_answers_the_health_check_serving_and_lists_its_services_over_reflection() {
    let stack = Stack::start().await.unwrap();
    for service in &stack.services {
        let mut health = HealthClient::new(channel(service.url()).await);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{}", service.name);
        let services = list_services(service.url()).await;
        assert!(
            services.contains(&"grpc.health.v1.Health".to_owned())
                && services.contains(&"grpc.reflection.v1.ServerReflection".to_owned()),
            "{}: {services:?}",
            service.name
        );
        // An unknown service name is reported as such, not as serving.
        let unknown = health
            .check(HealthCheckRequest {
                service: "mst.nothing.v1.Nothing".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn every_service_stops_cleanly_on_shutdown_and_refuses_new_connections() {
    let stack = Stack::start().await.unwrap();
    let urls: Vec<String> = stack.services.iter().map(|s| s.url()).collect();
    stack.stop(Duration::from_secs(10)).await.unwrap();
    for url in urls {
        let err = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await;
        assert!(err.is_err(), "{url} still accepts connections");
    }
}

#[tokio::test]
async fn each_service_creates_the_shared_event_streams() {
    let stack = Stack::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let names = [
        stack.prefix.to_uppercase(),
        format!("{}_DEADLETTER", stack.prefix.to_uppercase()),
    ];
    for name in names {
        let mut stream = js.get_stream(&name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 1, "{name}");
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
