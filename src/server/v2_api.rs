//! KServe V2 (Open Inference Protocol) over the version the alias serves, as the model
//! [`MODEL_NAME`]: one FP64 or FP32 tensor `[n, 29]` of features in schema order in,
//! `churn_probability` and `clv` (FP64, `[n]`) out, with server and model metadata for the
//! standard clients. The same load generator measures this server and a V2 server such as
//! MLServer. No customer ids here, so no experiment routing.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::Metrics;
use super::models::Models;
use crate::features::N_FEATURES;
use crate::proto::inference as v2;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::scoring::{self, Limits, Model, ScoringError};

pub struct InferenceService {
    pub models: Arc<Models>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Shared with the Scoring service: the same threads and the same in-flight limit.
    pub pool: super::pool::ScoringPool,
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

const OUTPUTS: [&str; 2] = ["churn_probability", "clv"];

/// The one model this server serves over V2. An empty name means it too.
pub const MODEL_NAME: &str = "loyalscore";

/// A request's model name, checked: another name is not served here.
fn check_model_name(name: &str) -> Result<(), ScoringError> {
    if name.is_empty() || name == MODEL_NAME {
        Ok(())
    } else {
        Err(ScoringError::ModelNotServed(name.to_string()))
    }
}

/// Values sent in another field than the datatype's (FP64 data in `fp32_contents`) would
/// read as an empty tensor: say which field they are in.
fn check_contents_field(t: &v2::model_infer_request::InferInputTensor) -> Result<(), ScoringError> {
    // Another datatype is refused as such, later.
    let Some(c) = t
        .contents
        .as_ref()
        .filter(|_| matches!(t.datatype.as_str(), "FP64" | "FP32"))
    else {
        return Ok(());
    };
    let fields = [
        ("FP64", "fp64_contents", c.fp64_contents.len()),
        ("FP32", "fp32_contents", c.fp32_contents.len()),
        ("INT32", "int_contents", c.int_contents.len()),
        ("INT64", "int64_contents", c.int64_contents.len()),
        ("UINT32", "uint_contents", c.uint_contents.len()),
        ("UINT64", "uint64_contents", c.uint64_contents.len()),
        ("BOOL", "bool_contents", c.bool_contents.len()),
        ("BYTES", "bytes_contents", c.bytes_contents.len()),
    ];
    let own = fields.iter().find(|f| f.0 == t.datatype).map_or(0, |f| f.2);
    match fields.iter().find(|f| f.0 != t.datatype && f.2 > 0) {
        Some(other) if own == 0 => Err(ScoringError::invalid(
            "inputs[0].contents",
            format!(
                "datatype {} but the {} values are in {}: put them in the datatype's field, or set datatype {}",
                t.datatype, other.2, other.1, other.0
            ),
        )),
        _ => Ok(()),
    }
}

/// The input tensor's values as f64, from `contents` or `raw_input_contents`.
fn tensor_values(req: &v2::ModelInferRequest) -> Result<(Vec<f64>, usize), ScoringError> {
    let [t] = &req.inputs[..] else {
        return Err(ScoringError::invalid(
            "inputs",
            format!(
                "{} tensors; send one [n, {N_FEATURES}] tensor",
                req.inputs.len()
            ),
        ));
    };
    let n_rows = match t.shape[..] {
        [n, f] if f == N_FEATURES as i64 && n >= 0 => n as usize,
        [f] if f == N_FEATURES as i64 => 1,
        _ => {
            return Err(ScoringError::invalid(
                "inputs[0].shape",
                format!("{:?} is not [n, {N_FEATURES}]", t.shape),
            ))
        }
    };
    check_contents_field(t)?;
    let raw = req.raw_input_contents.first();
    let width = match t.datatype.as_str() {
        "FP64" => 8,
        _ => 4,
    };
    if let Some(b) = raw.filter(|b| b.len() % width != 0) {
        return Err(ScoringError::invalid(
            "raw_input_contents[0]",
            format!(
                "{} bytes is not a whole number of {} values",
                b.len(),
                t.datatype
            ),
        ));
    }
    let values = match (t.datatype.as_str(), raw) {
        ("FP64", Some(b)) => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        ("FP32", Some(b)) => b
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect(),
        ("FP64", None) => t
            .contents
            .as_ref()
            .map(|c| c.fp64_contents.clone())
            .unwrap_or_default(),
        ("FP32", None) => t
            .contents
            .as_ref()
            .map(|c| c.fp32_contents.iter().map(|&v| f64::from(v)).collect())
            .unwrap_or_default(),
        (other, _) => {
            return Err(ScoringError::invalid(
                "inputs[0].datatype",
                format!("{other:?}; send FP64 or FP32"),
            ))
        }
    };
    Ok((values, n_rows))
}

impl InferenceService {
    async fn model(&self, version: &str) -> Result<Arc<Model>, ScoringError> {
        if version.is_empty() {
            self.models.active().ok_or(ScoringError::NotReady)
        } else {
            self.models.pinned(version).await
        }
    }

    async fn infer(
        &self,
        req: v2::ModelInferRequest,
    ) -> Result<v2::ModelInferResponse, ScoringError> {
        check_model_name(&req.model_name)?;
        let model = self.model(&req.model_version).await?;
        let (values, n_rows) = tensor_values(&req)?;
        scoring::check_batch_len("inputs[0].shape", n_rows, &self.limits)?;
        let rows = scoring::features_from_rows("inputs[0]", &values, n_rows)?;
        let wanted: Vec<&str> = if req.outputs.is_empty() {
            OUTPUTS.to_vec()
        } else {
            req.outputs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    OUTPUTS
                        .iter()
                        .copied()
                        .find(|n| *n == o.name)
                        .ok_or_else(|| {
                            ScoringError::invalid(
                                format!("outputs[{i}].name"),
                                format!("{:?}; this model has churn_probability and clv", o.name),
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        };
        // Feature tensors describe the customer now. One row is scored where it arrived, a
        // tensor of many on the pool.
        let now = chrono::Utc::now().timestamp();
        let score_all = {
            let model = model.clone();
            move || -> (Vec<f64>, Vec<f64>) {
                rows.iter()
                    .map(|f| {
                        let s = scoring::score(&model, f, now, Default::default());
                        model.served(f, &s, now);
                        (s.churn, s.clv)
                    })
                    .unzip()
            }
        };
        let (churn, clv) = if n_rows <= 1 {
            score_all()
        } else {
            self.pool
                .run(score_all)
                .await
                .map_err(|s| ScoringError::Busy(s.message().to_string()))?
        };
        let (outputs, raw_output_contents) =
            outputs(wanted, (churn, clv), !req.raw_input_contents.is_empty());
        Ok(v2::ModelInferResponse {
            model_name: MODEL_NAME.into(),
            model_version: model.version.clone(),
            id: req.id,
            outputs,
            raw_output_contents,
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<v2::ServerLiveRequest>,
    ) -> Result<Response<v2::ServerLiveResponse>, Status> {
        Ok(Response::new(v2::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<v2::ServerReadyRequest>,
    ) -> Result<Response<v2::ServerReadyResponse>, Status> {
        Ok(Response::new(v2::ServerReadyResponse {
            ready: self.models.active().is_some(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<v2::ModelReadyRequest>,
    ) -> Result<Response<v2::ModelReadyResponse>, Status> {
        let r = req.get_ref();
        // A model that does not exist here is not "not ready": it is NOT_FOUND.
        check_model_name(&r.name).map_err(convert::scoring_status)?;
        let ready = self.model(&r.version).await.is_ok();
        Ok(Response::new(v2::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<v2::ServerMetadataRequest>,
    ) -> Result<Response<v2::ServerMetadataResponse>, Status> {
        Ok(Response::new(v2::ServerMetadataResponse {
            name: "loyalscore".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<v2::ModelMetadataRequest>,
    ) -> Result<Response<v2::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let answer = async {
            check_model_name(&r.name)?;
            let model = self.model(&r.version).await?;
            Ok::<_, ScoringError>(metadata(&model))
        };
        answer
            .await
            .map(Response::new)
            .map_err(convert::scoring_status)
    }

    async fn model_infer(
        &self,
        req: Request<v2::ModelInferRequest>,
    ) -> Result<Response<v2::ModelInferResponse>, Status> {
        let start = Instant::now();
        if let Some(c) = req.extensions().get::<super::outcomes::Counted>() {
            c.mark();
        }
        let _slot = super::pool::slot(&self.in_flight).inspect_err(|_| {
            self.metrics
                .observe_request("ModelInfer", Code::ResourceExhausted, "", start)
        })?;
        let result = self.infer(req.into_inner()).await;
        let (code, version) = match &result {
            Ok(r) => (Code::Ok, r.model_version.as_str()),
            Err(e) => (convert::scoring_code(e), ""),
        };
        self.metrics
            .observe_request("ModelInfer", code, version, start);
        result.map(Response::new).map_err(convert::scoring_status)
    }
}

/// The requested outputs, answered the way the input came: raw bytes for raw bytes (what
/// tritonclient sends and reads), typed contents otherwise.
fn outputs(
    wanted: Vec<&str>,
    (churn, clv): (Vec<f64>, Vec<f64>),
    raw: bool,
) -> (
    Vec<v2::model_infer_response::InferOutputTensor>,
    Vec<Vec<u8>>,
) {
    let n_rows = churn.len();
    let mut raw_output_contents = Vec::new();
    let outputs = wanted
        .into_iter()
        .map(|name| {
            let values = if name == "clv" { &clv } else { &churn };
            let contents = if raw {
                raw_output_contents.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
                None
            } else {
                Some(v2::InferTensorContents {
                    fp64_contents: values.clone(),
                    ..Default::default()
                })
            };
            v2::model_infer_response::InferOutputTensor {
                name: name.to_string(),
                datatype: "FP64".into(),
                shape: vec![n_rows as i64],
                contents,
            }
        })
        .collect();
    (outputs, raw_output_contents)
}

/// What a standard client asks before it sends a tensor.
fn metadata(model: &Model) -> v2::ModelMetadataResponse {
    use v2::model_metadata_response::TensorMetadata;
    let tensor = |name: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: "FP64".into(),
        shape,
        parameters: Default::default(),
    };
    let mut input = tensor("features", vec![-1, N_FEATURES as i64]);
    input.parameters.insert(
        "feature_names".into(),
        v2::InferParameter {
            parameter_choice: Some(v2::infer_parameter::ParameterChoice::StringParam(
                model.schema().names.join(","),
            )),
        },
    );
    v2::ModelMetadataResponse {
        name: MODEL_NAME.into(),
        versions: vec![model.version.clone()],
        platform: "loyalscore-random-forest".into(),
        // FP32 is accepted as well; the features are the schema's, in its order (`models show`).
        inputs: vec![input],
        outputs: OUTPUTS.iter().map(|o| tensor(o, vec![-1])).collect(),
    }
}
