//! `inference.GRPCInferenceService`: the Open Inference Protocol over gRPC,
//! translated onto the protocol's calls (`api::oip`) that the HTTP front's
//! `/v2` routes share.

use super::streams::{ResponseStream, message_stream};
use crate::api::oip::{self as oip_api, PLATFORM};
use crate::api::serving::Serving;
use candela::inference::{self as oip, grpc_inference_service_server::GrpcInferenceService};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The service name in metrics.
const SERVICE: &str = "inference.GRPCInferenceService";

/// Protocol extensions this service really implements (ServerMetadata).
pub const EXTENSIONS: &[&str] = &["classification", "model_configuration", "model_repository", "statistics"];

/// The Open Inference Protocol service.
pub struct OpenInferenceApi {
    serving: Arc<Serving>,
}

impl OpenInferenceApi {
    pub fn new(serving: Arc<Serving>) -> OpenInferenceApi {
        OpenInferenceApi { serving }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OpenInferenceApi {
    async fn server_live(
        &self,
        _request: Request<oip::ServerLiveRequest>,
    ) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<oip::ServerReadyRequest>,
    ) -> Result<Response<oip::ServerReadyResponse>, Status> {
        Ok(Response::new(oip::ServerReadyResponse { ready: self.serving.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<oip::ModelReadyRequest>,
    ) -> Result<Response<oip::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = oip_api::model_ready(&self.serving, &request.name, &request.version)?;
        Ok(Response::new(oip::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: PLATFORM.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(oip_api::model_metadata(&self.serving, &request.name, &request.version)?))
    }

    async fn model_infer(
        &self,
        request: Request<oip::ModelInferRequest>,
    ) -> Result<Response<oip::ModelInferResponse>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "ModelInfer");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            let raw = !request.raw_input_contents.is_empty();
            oip_api::infer(&self.serving, request, &call, raw).await
        }
        .await;
        call.finish(result).map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream<oip::ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<oip::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let stream = self.serving.call(request.metadata().as_ref(), SERVICE, "ModelStreamInfer");
        let answers =
            message_stream(&self.serving, stream, request.into_inner(), |serving, message, call| async move {
                let call = call.named(&message.id);
                let result = async {
                    let _permit = serving.admit()?;
                    let raw = !message.raw_input_contents.is_empty();
                    oip_api::infer(&serving, message, &call, raw).await
                }
                .await;
                match call.finished(result) {
                    Ok(response) => {
                        oip::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
                    }
                    Err(error) => {
                        oip::ModelStreamInferResponse { error_message: error.to_string(), infer_response: None }
                    }
                }
            });
        Ok(Response::new(answers))
    }

    async fn model_config(
        &self,
        request: Request<oip::ModelConfigRequest>,
    ) -> Result<Response<oip::ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let config = oip_api::model_config(&self.serving, &request.name, &request.version)?;
        Ok(Response::new(oip::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        request: Request<oip::ModelStatisticsRequest>,
    ) -> Result<Response<oip::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let model_stats = oip_api::statistics(&*self.serving.models()?, &request.name, &request.version)?;
        Ok(Response::new(oip::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<oip::RepositoryIndexRequest>,
    ) -> Result<Response<oip::RepositoryIndexResponse>, Status> {
        let models = oip_api::repository_index(&self.serving, request.into_inner().ready)?;
        Ok(Response::new(oip::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<oip::RepositoryModelLoadRequest>,
    ) -> Result<Response<oip::RepositoryModelLoadResponse>, Status> {
        oip_api::load(&self.serving, request.into_inner().model_name).await?;
        Ok(Response::new(oip::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<oip::RepositoryModelUnloadRequest>,
    ) -> Result<Response<oip::RepositoryModelUnloadResponse>, Status> {
        oip_api::unload(&self.serving, request.into_inner().model_name).await?;
        Ok(Response::new(oip::RepositoryModelUnloadResponse {}))
    }
}
