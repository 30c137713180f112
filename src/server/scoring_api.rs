//! The `Scoring` service: validate → score with the scoring core → convert.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::Metrics;
use super::models::Models;
use super::shadow::{ShadowJob, Shadows};
use crate::exposure::{Exposure, ExposureLog};
use crate::features::FeatureSchema;
use crate::features::{FeatureVector, FEATURE_NAMES};
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_server::Scoring;
use crate::registry::HOLDOUT_ARM;
use crate::routing::{Route, Routing};
use crate::scoring::{self, Limits, Model, NamePlan, ScoringError};

pub struct ScoringService {
    pub models: Arc<Models>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub shadows: Shadows,
    pub exposures: Option<ExposureLog>,
}

fn invalid(field: &str, message: impl Into<String>) -> ScoringError {
    ScoringError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// What a request (or a batch) reads once, so a swap mid-batch never mixes states.
struct Snapshot {
    active: Option<Arc<Model>>,
    routing: Option<Arc<Routing>>,
}

/// Who answers one item.
enum Answerer<'a> {
    /// The alias's version, or a pinned one: no experiment.
    Plain(Arc<Model>),
    Arm {
        routing: &'a Arc<Routing>,
        arm: &'a str,
        model: &'a Arc<Model>,
    },
    /// In the experiment's holdout; the model only supplies the schema to check input with.
    Holdout {
        routing: &'a Arc<Routing>,
        model: &'a Arc<Model>,
    },
}

impl Answerer<'_> {
    fn model(&self) -> &Model {
        match self {
            Answerer::Plain(m) => m,
            Answerer::Arm { model, .. } | Answerer::Holdout { model, .. } => model,
        }
    }
}

impl ScoringService {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            active: self.models.active(),
            routing: self.models.routing(),
        }
    }

    /// A pinned version bypasses the experiment; otherwise a running experiment routes by
    /// customer, and without one the alias's version answers.
    async fn answerer<'a>(
        &self,
        item: &pb::ScoreRequest,
        snap: &'a Snapshot,
    ) -> Result<Answerer<'a>, ScoringError> {
        if !item.version.is_empty() {
            return Ok(Answerer::Plain(self.models.pinned(&item.version).await?));
        }
        if let Some(routing) = &snap.routing {
            return Ok(match routing.route(&item.customer_id) {
                Route::Arm { arm, model } => Answerer::Arm {
                    routing,
                    arm,
                    model,
                },
                Route::Holdout => Answerer::Holdout {
                    routing,
                    model: routing.any_model(),
                },
            });
        }
        snap.active
            .clone()
            .map(Answerer::Plain)
            .ok_or(ScoringError::NotReady)
    }

    /// Validates and scores one item: the same path for Score and each BatchScore item.
    async fn score_one(
        &self,
        item: pb::ScoreRequest,
        snap: &Snapshot,
        batch_names: Option<&Result<NamePlan, ScoringError>>,
        now: i64,
        start: Option<Instant>,
    ) -> Result<pb::ScoreResponse, ScoringError> {
        if item.customer_id.is_empty() {
            return Err(invalid("customer_id", "is empty"));
        }
        if item.customer_id.len() > 256 {
            return Err(invalid("customer_id", "is longer than 256 bytes"));
        }
        let who = self.answerer(&item, snap).await?;
        let model = who.model();
        let (f, as_of) = match &item.input {
            Some(pb::score_request::Input::Features(fs)) => {
                let f = match batch_names {
                    Some(Ok(plan)) if fs.names.is_empty() => plan.features(&fs.values)?,
                    Some(Err(e)) if fs.names.is_empty() => return Err(e.clone()),
                    _ => scoring::features_from_named(model.schema(), &fs.names, &fs.values)?,
                };
                (f, now)
            }
            Some(pb::score_request::Input::History(h)) => {
                let as_of = match &item.as_of {
                    Some(t) => convert::timestamp(t, "as_of")?,
                    None => now,
                };
                let txs = convert::transactions(h, &self.limits)?;
                (
                    scoring::features_from_history(&txs, as_of, &self.limits)?,
                    as_of,
                )
            }
            None => return Err(invalid("input", "give either features or history")),
        };
        let (routing, arm) = match &who {
            Answerer::Plain(_) => {
                return Ok(self.scored(model, item, &f));
            }
            Answerer::Arm { routing, arm, .. } => (*routing, *arm),
            Answerer::Holdout { routing, .. } => (*routing, HOLDOUT_ARM),
        };
        let exp = routing.experiment.as_str();
        let mut resp = if matches!(who, Answerer::Holdout { .. }) {
            pb::ScoreResponse {
                customer_id: item.customer_id,
                horizon_days: model.bundle.horizon_days,
                holdout: true,
                ..Default::default()
            }
        } else {
            let r = self.scored(model, item, &f);
            let labels = [exp, arm, model.version.as_str()];
            self.metrics
                .exp_churn
                .with_label_values(&labels)
                .observe(r.churn_probability);
            self.metrics
                .exp_clv
                .with_label_values(&labels)
                .observe(r.clv);
            if !routing.shadows.is_empty() {
                self.shadows.submit(ShadowJob {
                    routing: routing.clone(),
                    version: model.version.clone(),
                    churn: r.churn_probability,
                    clv: r.clv,
                    features: f,
                });
            }
            r
        };
        resp.experiment = exp.to_string();
        resp.arm = arm.to_string();
        self.metrics
            .exp_requests
            .with_label_values(&[exp, arm, resp.model_version.as_str()])
            .inc();
        if let Some(start) = start {
            self.metrics
                .exp_latency
                .with_label_values(&[exp, arm])
                .observe(start.elapsed().as_secs_f64());
        }
        if let Some(log) = &self.exposures {
            let queued = log.record(Exposure {
                customer: log.key().hash(&resp.customer_id),
                experiment: resp.experiment.clone(),
                arm: resp.arm.clone(),
                version: resp.model_version.clone(),
                churn_probability: (!resp.holdout).then_some(resp.churn_probability),
                clv: (!resp.holdout).then_some(resp.clv),
                horizon_days: resp.horizon_days,
                as_of: rfc3339(as_of),
                at: rfc3339(now),
            });
            self.metrics
                .exposures
                .with_label_values(&[if queued { "queued" } else { "dropped" }])
                .inc();
        }
        Ok(resp)
    }

    fn scored(
        &self,
        model: &Model,
        item: pb::ScoreRequest,
        f: &FeatureVector,
    ) -> pb::ScoreResponse {
        let explain = item.explain;
        let scored = scoring::score(model, f, explain);
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
        resp
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

fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
        let snap = self.snapshot();
        match self.score_one(item, &snap, None, now(), Some(start)).await {
            Ok(r) => {
                self.observe("Score", Code::Ok, &r.model_version, start);
                Ok(Response::new(r))
            }
            Err(e) => {
                let version = snap.active.as_ref().map_or("", |m| m.version.as_str());
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
        // One state for the whole batch: a swap mid-batch never mixes versions or routings.
        let snap = self.snapshot();
        let now = now();
        // Every model has this build's schema (Model::new), so one plan serves every item.
        let plan = (!batch.feature_names.is_empty())
            .then(|| NamePlan::new(&FeatureSchema::current(), &batch.feature_names));
        let mut results = Vec::with_capacity(batch.items.len());
        let (mut ok, mut failed) = (0u64, 0u64);
        for (index, item) in batch.items.into_iter().enumerate() {
            let r = self.score_one(item, &snap, plan.as_ref(), now, None).await;
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
        let version = snap.active.as_ref().map_or("", |m| m.version.as_str());
        self.observe("BatchScore", Code::Ok, version, start);
        Ok(Response::new(pb::BatchScoreResponse { results }))
    }
}
