//! Server reflection through real reflection clients, both protocol versions:
//! v1 (current clients) and v1alpha (grpcurl 1.8 and older tools).

mod common;

use candela_server::testing::TestServer;
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;

const METHODS: [&str; 8] = [
    "Predict",
    "BatchPredict",
    "BatchPredictStream",
    "StreamPredict",
    "ListModels",
    "GetModel",
    "Feedback",
    "FeedbackStream",
];

/// The services listed and the descriptor of the file defining `candela.v1.Inference`.
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("candela.v1.Inference".into()),
        ]
        .map(|m| ServerReflectionRequest { host: String::new(), message_request: Some(m) });
        let mut responses = client.server_reflection_info(futures::stream::iter(requests)).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list")
        };
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected file descriptors")
        };
        let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        let files: Vec<FileDescriptorProto> =
            files.file_descriptor_proto.iter().map(|b| FileDescriptorProto::decode(&b[..]).unwrap()).collect();
        (services, files)
    }};
}

fn check(services: &[String], files: &[FileDescriptorProto]) {
    for name in ["candela.v1.Inference", "inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == name), "{name} not listed in {services:?}");
    }
    let file = files.iter().find(|f| f.package() == "candela.v1").expect("the candela.v1 file");
    let service = file.service.iter().find(|s| s.name() == "Inference").unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, METHODS);
    let stream = service.method.iter().find(|m| m.name() == "StreamPredict").unwrap();
    assert!(stream.client_streaming() && stream.server_streaming());
}

#[tokio::test]
async fn reflection_v1_lists_and_describes_the_api() {
    let server = TestServer::start(&[]).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let (services, files) = reflect!(v1, channel);
    check(&services, &files);
}

#[tokio::test]
async fn reflection_v1alpha_lists_and_describes_the_api() {
    let server = TestServer::start(&[]).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let (services, files) = reflect!(v1alpha, channel);
    check(&services, &files);
}
