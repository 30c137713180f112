//! The `Scoring` service: validate → score with the scoring core → convert.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::Metrics;
use super::models::Models;
use crate::features::FEATURE_NAMES;
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_server::Scoring;
use crate::scoring::{self, Limits, Model, ScoringError};

pub struct ScoringService {
    pub models: Arc<Models>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

fn invalid(field: &str, message: impl Into<String>) -> ScoringError {
    ScoringError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

impl ScoringService {
    /// The model for an item: its pinned version, or the active one taken once per request.
    async fn model_for(
        &self,
        item: &pb::ScoreRequest,
        active: &Option<Arc<Model>>,
    ) -> Result<Arc<Model>, ScoringError> {
        if item.version.is_empty() {
            active.clone().ok_or(ScoringError::NotReady)
        } else {
            self.models.pinned(&item.version).await
        }
    }

    fn score_item(
        &self,
        model: &Model,
        item: pb::ScoreRequest,
        batch_names: &[String],
        now: i64,
    ) -> Result<pb::ScoreResponse, ScoringError> {
        if item.customer_id.is_empty() {
            return Err(invalid("customer_id", "is empty"));
        }
        if item.customer_id.len() > 256 {
            return Err(invalid("customer_id", "is longer than 256 bytes"));
        }
        let f = match &item.input {
            Some(pb::score_request::Input::Features(fs)) => {
                let names = if fs.names.is_empty() {
                    batch_names
                } else {
                    &fs.names[..]
                };
                scoring::features_from_named(model.schema(), names, &fs.values)?
            }
            Some(pb::score_request::Input::History(h)) => {
                let as_of = match &item.as_of {
                    Some(t) => convert::timestamp(t, "as_of")?,
                    None => now,
                };
                let txs = convert::transactions(h, &self.limits)?;
                scoring::features_from_history(&txs, as_of, &self.limits)?
            }
            None => return Err(invalid("input", "give either features or history")),
        };
        let explain = item.explain;
        let scored = scoring::score(model, &f, explain);
        let mut resp = convert::response(
            item.customer_id,
            scored,
            &model.version,
            model.bundle.horizon_days,
        );
        if explain {
            resp.features = Some(pb::Features {
                names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
                values: f.to_vec(),
            });
        }
        Ok(resp)
    }

    fn observe(&self, method: &str, code: Code, version: &str, start: Instant) {
        self.metrics
            .requests
            .with_label_values(&[method, code_name(code), version])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
    }
}

pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::Unavailable => "UNAVAILABLE",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::Aborted => "ABORTED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        _ => "OTHER",
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tonic::async_trait]
impl Scoring for ScoringService {
    async fn score(
        &self,
        req: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let start = Instant::now();
        let item = req.into_inner();
        let active = if item.version.is_empty() {
            self.models.active()
        } else {
            None
        };
        let result = match self.model_for(&item, &active).await {
            Ok(model) => self.score_item(&model, item, &[], now()),
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                self.observe("Score", Code::Ok, &r.model_version, start);
                Ok(Response::new(r))
            }
            Err(e) => {
                let version = active.as_ref().map_or("", |m| m.version.as_str());
                self.observe("Score", convert::scoring_code(&e), version, start);
                Err(convert::scoring_status(e))
            }
        }
    }

    async fn batch_score(
        &self,
        req: Request<pb::BatchScoreRequest>,
    ) -> Result<Response<pb::BatchScoreResponse>, Status> {
        let start = Instant::now();
        let batch = req.into_inner();
        if batch.items.len() > self.limits.max_batch {
            self.observe("BatchScore", Code::InvalidArgument, "", start);
            return Err(Status::invalid_argument(format!(
                "items: {} items, more than the limit of {}",
                batch.items.len(),
                self.limits.max_batch
            )));
        }
        // One active version for the whole batch: a swap mid-batch never mixes versions.
        let active = self.models.active();
        let now = now();
        let mut results = Vec::with_capacity(batch.items.len());
        let (mut ok, mut failed) = (0u64, 0u64);
        for (index, item) in batch.items.into_iter().enumerate() {
            let r = match self.model_for(&item, &active).await {
                Ok(model) => self.score_item(&model, item, &batch.feature_names, now),
                Err(e) => Err(e),
            };
            let result = match r {
                Ok(s) => {
                    ok += 1;
                    pb::batch_item::Result::Score(s)
                }
                Err(e) => {
                    failed += 1;
                    let code = convert::scoring_code(&e);
                    let (field, message) = match e {
                        ScoringError::Invalid { field, message } => (field, message),
                        other => (String::new(), other.to_string()),
                    };
                    pb::batch_item::Result::Error(pb::ItemError {
                        code: code_name(code).to_string(),
                        field,
                        message,
                    })
                }
            };
            results.push(pb::BatchItem {
                index: index as u32,
                result: Some(result),
            });
        }
        self.metrics
            .batch_items
            .with_label_values(&["ok"])
            .inc_by(ok);
        self.metrics
            .batch_items
            .with_label_values(&["error"])
            .inc_by(failed);
        let version = active.as_ref().map_or("", |m| m.version.as_str());
        self.observe("BatchScore", Code::Ok, version, start);
        Ok(Response::new(pb::BatchScoreResponse { results }))
    }
}
