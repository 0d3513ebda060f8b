//! `transport-baseline`: an Open Inference Protocol server with no model. It
//! answers ModelInfer for one model (`retail`'s shape by default: 30 FP32
//! features in, `probabilities` FP32 [rows, 2] and `prediction` INT64 [rows, 1]
//! out) with correctly shaped zeros, and the metadata, config and readiness
//! RPCs perf_analyzer asks for. It is what gRPC costs on this machine with the
//! same transport settings Candela uses (tonic, TCP_NODELAY): the physical
//! limit that `bench/run.sh` measures Candela against.

use bytes::Bytes;
use candela::inference::{self as oip, grpc_inference_service_server as server};
use clap::Parser;
use oip::model_infer_response::InferOutputTensor;
use oip::model_metadata_response::TensorMetadata;
use std::net::SocketAddr;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// A model-free Open Inference Protocol server, the transport baseline.
#[derive(Parser)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// The model name it answers for.
    #[arg(long, default_value = "retail")]
    model: String,
    /// Features per input row.
    #[arg(long, default_value_t = 30)]
    features: usize,
    /// Classes per output row.
    #[arg(long, default_value_t = 2)]
    classes: usize,
}

struct Baseline {
    model: String,
    features: usize,
    classes: usize,
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

impl Baseline {
    fn check(&self, name: &str) -> Result<(), Status> {
        if name == self.model { Ok(()) } else { Err(Status::not_found(format!("no model `{name}`"))) }
    }

    /// Zeros shaped as Candela's answer for the request's rows.
    fn infer(&self, request: oip::ModelInferRequest) -> Result<oip::ModelInferResponse, Status> {
        self.check(&request.model_name)?;
        let input = request.inputs.first().ok_or_else(|| Status::invalid_argument("no input tensor"))?;
        let rows = *input.shape.first().ok_or_else(|| Status::invalid_argument("input has no shape"))?;
        let rows = usize::try_from(rows).map_err(|_| Status::invalid_argument("negative batch"))?;
        let raw = !request.raw_input_contents.is_empty();
        let tensor = |name: &str, datatype: &str, width: usize, contents: oip::InferTensorContents| InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![rows as i64, width as i64],
            parameters: Default::default(),
            contents: (!raw).then_some(contents),
        };
        let outputs = vec![
            tensor(
                "probabilities",
                "FP32",
                self.classes,
                oip::InferTensorContents { fp32_contents: vec![0.0; rows * self.classes], ..Default::default() },
            ),
            tensor(
                "prediction",
                "INT64",
                1,
                oip::InferTensorContents { int64_contents: vec![0; rows], ..Default::default() },
            ),
        ];
        let raw_output_contents = if raw {
            vec![Bytes::from(vec![0u8; rows * self.classes * 4]), Bytes::from(vec![0u8; rows * 8])]
        } else {
            Vec::new()
        };
        Ok(oip::ModelInferResponse {
            model_name: self.model.clone(),
            model_version: "1".into(),
            id: request.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        })
    }
}

#[tonic::async_trait]
impl server::GrpcInferenceService for Baseline {
    async fn server_live(
        &self,
        _: Request<oip::ServerLiveRequest>,
    ) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<oip::ServerReadyRequest>,
    ) -> Result<Response<oip::ServerReadyResponse>, Status> {
        Ok(Response::new(oip::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<oip::ModelReadyRequest>,
    ) -> Result<Response<oip::ModelReadyResponse>, Status> {
        self.check(&request.into_inner().name)?;
        Ok(Response::new(oip::ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: "transport-baseline".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        self.check(&request.into_inner().name)?;
        let tensor = |name: &str, datatype: &str, width: usize| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![-1, width as i64],
        };
        Ok(Response::new(oip::ModelMetadataResponse {
            name: self.model.clone(),
            versions: vec!["1".into()],
            platform: "transport-baseline".into(),
            inputs: vec![tensor("features", "FP32", self.features)],
            outputs: vec![tensor("probabilities", "FP32", self.classes), tensor("prediction", "INT64", 1)],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<oip::ModelInferRequest>,
    ) -> Result<Response<oip::ModelInferResponse>, Status> {
        self.infer(request.into_inner()).map(Response::new)
    }

    type ModelStreamInferStream = Stream<oip::ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<oip::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(Status::unimplemented("the transport baseline answers unary ModelInfer only"))
    }

    async fn model_config(
        &self,
        request: Request<oip::ModelConfigRequest>,
    ) -> Result<Response<oip::ModelConfigResponse>, Status> {
        self.check(&request.into_inner().name)?;
        let output = |name: &str, data_type: oip::DataType, width: usize| oip::ModelOutput {
            name: name.into(),
            data_type: data_type as i32,
            dims: vec![width as i64],
            ..Default::default()
        };
        Ok(Response::new(oip::ModelConfigResponse {
            config: Some(oip::ModelConfig {
                name: self.model.clone(),
                platform: "transport-baseline".into(),
                backend: "transport-baseline".into(),
                max_batch_size: 1000,
                input: vec![oip::ModelInput {
                    name: "features".into(),
                    data_type: oip::DataType::TypeFp32 as i32,
                    dims: vec![self.features as i64],
                    ..Default::default()
                }],
                output: vec![
                    output("probabilities", oip::DataType::TypeFp32, self.classes),
                    output("prediction", oip::DataType::TypeInt64, 1),
                ],
                dynamic_batching: None,
                model_transaction_policy: Some(oip::ModelTransactionPolicy { decoupled: false }),
            }),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<oip::ModelStatisticsRequest>,
    ) -> Result<Response<oip::ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("the transport baseline keeps no statistics"))
    }

    async fn repository_index(
        &self,
        _: Request<oip::RepositoryIndexRequest>,
    ) -> Result<Response<oip::RepositoryIndexResponse>, Status> {
        Err(Status::unimplemented("the transport baseline has no repository"))
    }

    async fn repository_model_load(
        &self,
        _: Request<oip::RepositoryModelLoadRequest>,
    ) -> Result<Response<oip::RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented("the transport baseline has no repository"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<oip::RepositoryModelUnloadRequest>,
    ) -> Result<Response<oip::RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented("the transport baseline has no repository"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("transport baseline listening on {}", listener.local_addr()?);
    let service = Baseline { model: args.model, features: args.features, classes: args.classes };
    tonic::transport::Server::builder()
        .add_service(server::GrpcInferenceServiceServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
