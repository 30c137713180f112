//! KServe V2 (Open Inference Protocol) over the version the alias serves: one FP64 or FP32
//! tensor `[n, 23]` of features in schema order in, `churn_probability` and `clv` (FP64,
//! `[n]`) out. For clients and tools that speak V2; the same load generator measures this
//! server and a V2 server such as MLServer. No customer ids here, so no experiment routing.

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
}

const OUTPUTS: [&str; 2] = ["churn_probability", "clv"];

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
        let (mut churn, mut clv) = (Vec::with_capacity(n_rows), Vec::with_capacity(n_rows));
        // Feature tensors describe the customer now.
        let now = chrono::Utc::now().timestamp();
        for f in &rows {
            let s = scoring::score(&model, f, now, Default::default());
            churn.push(s.churn);
            clv.push(s.clv);
        }
        let outputs = wanted
            .into_iter()
            .map(|name| v2::model_infer_response::InferOutputTensor {
                name: name.to_string(),
                datatype: "FP64".into(),
                shape: vec![n_rows as i64],
                contents: Some(v2::InferTensorContents {
                    fp64_contents: if name == "clv" {
                        clv.clone()
                    } else {
                        churn.clone()
                    },
                    ..Default::default()
                }),
            })
            .collect();
        Ok(v2::ModelInferResponse {
            model_name: req.model_name,
            model_version: model.version.clone(),
            id: req.id,
            outputs,
            raw_output_contents: vec![],
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
        let ready = self.model(&req.get_ref().version).await.is_ok();
        Ok(Response::new(v2::ModelReadyResponse { ready }))
    }

    async fn model_infer(
        &self,
        req: Request<v2::ModelInferRequest>,
    ) -> Result<Response<v2::ModelInferResponse>, Status> {
        let start = Instant::now();
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
