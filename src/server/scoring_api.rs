//! The `Scoring` service: validate → score with the scoring core → convert.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::Metrics;
use super::models::Models;
use super::shadow::{ShadowJob, Shadows};
use crate::exposure::{Exposure, ExposureLog};
use crate::features::{FeatureSchema, FeatureVector, FEATURE_NAMES};
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_server::Scoring;
use crate::registry::HOLDOUT_ARM;
use crate::routing::{Route, Routing};
use crate::scoring::{self, Explain, Limits, Locale, Model, ModelInput, NamePlan, ScoringError};
use crate::state::{CustomerState, CustomerStore};
use crate::time::fmt_ts;

#[derive(Clone)]
pub struct ScoringService {
    pub models: Arc<Models>,
    /// Where batches are scored, off the request threads.
    pub pool: super::pool::ScoringPool,
    /// Slots for scoring requests in progress; none free: RESOURCE_EXHAUSTED at once.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub shadows: Shadows,
    pub exposures: Option<ExposureLog>,
    /// Live customer state, for items scored by id alone.
    pub state: Option<Arc<dyn CustomerStore>>,
}

/// An item scored by id: its stored state as read (or why it could not be).
type Stored = Result<Option<CustomerState>, ScoringError>;

/// What a request (or a batch) reads once, so a swap mid-batch never mixes states.
struct Snapshot {
    active: Option<Arc<Model>>,
    routing: Option<Arc<Routing>>,
}

impl Snapshot {
    /// The version reported on a request that failed before any version answered.
    fn version(&self) -> &str {
        self.active.as_ref().map_or("", |m| m.version.as_str())
    }
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

/// The batch's shared feature names, resolved once (or the error every item using them gets).
type BatchNames = Option<Result<NamePlan, ScoringError>>;

/// The pinned versions a request names, each resolved once before scoring starts.
type Pins = std::collections::HashMap<String, Result<Arc<Model>, ScoringError>>;

/// A request's outcome in the metrics, also when it never finishes: a client that gave up
/// (its future dropped) counts as DEADLINE_EXCEEDED when its deadline had passed, else as
/// CANCELLED.
struct Outcome {
    metrics: Arc<Metrics>,
    method: &'static str,
    start: Instant,
    deadline: Option<Instant>,
    version: String,
    done: bool,
    /// Tells the outcomes layer this request is counted here.
    counted: Option<super::outcomes::Counted>,
}

impl Outcome {
    fn new<T>(
        metrics: &Arc<Metrics>,
        (method, req): (&'static str, &Request<T>),
        start: Instant,
        deadline: Option<Instant>,
    ) -> Self {
        Outcome {
            counted: req.extensions().get::<super::outcomes::Counted>().cloned(),
            metrics: metrics.clone(),
            method,
            start,
            deadline,
            version: String::new(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code, version: &str) {
        self.done = true;
        if let Some(c) = &self.counted {
            c.mark();
        }
        self.metrics
            .observe_request(self.method, code, version, self.start);
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            let code = super::pool::unanswered(self.start, self.deadline);
            let version = std::mem::take(&mut self.version);
            self.finish(code, &version);
        }
    }
}

/// An item's transactions, its share of the cost budget.
fn cost(item: &pb::ScoreRequest) -> usize {
    match &item.input {
        Some(pb::score_request::Input::History(h)) => h.transactions.len(),
        _ => 0,
    }
}

/// Customer ids are logged nowhere, but they are hashed and echoed: keep them bounded.
fn check_customer_id(id: &str) -> Result<(), ScoringError> {
    if id.is_empty() {
        return Err(ScoringError::invalid("customer_id", "is empty"));
    }
    if id.len() > 256 {
        return Err(ScoringError::invalid(
            "customer_id",
            "is longer than 256 bytes",
        ));
    }
    Ok(())
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
    fn answerer<'a>(
        &self,
        item: &pb::ScoreRequest,
        snap: &'a Snapshot,
        pins: &Pins,
    ) -> Result<Answerer<'a>, ScoringError> {
        if !item.version.is_empty() {
            let pinned = pins
                .get(&item.version)
                .cloned()
                .unwrap_or_else(|| Err(ScoringError::NotReady))?;
            return Ok(Answerer::Plain(pinned));
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

    /// Every distinct pinned version the items name, loaded (or refused) once for them all.
    async fn resolve_pins(&self, items: &[pb::ScoreRequest]) -> Pins {
        let mut pins = Pins::new();
        for item in items.iter().filter(|i| !i.version.is_empty()) {
            if !pins.contains_key(&item.version) {
                let m = self.models.pinned(&item.version).await;
                pins.insert(item.version.clone(), m);
            }
        }
        pins
    }

    /// Validates and scores one item: the same path for Score and each BatchScore item.
    fn score_one(
        &self,
        item: pb::ScoreRequest,
        snap: &Snapshot,
        (batch_names, stored, pins): (&BatchNames, Option<Stored>, &Pins),
        now: i64,
        start: Option<Instant>,
    ) -> Result<pb::ScoreResponse, ScoringError> {
        check_customer_id(&item.customer_id)?;
        let locale = Locale::parse(&item.locale)?;
        let who = self.answerer(&item, snap, pins)?;
        let (input, as_of) = self.features(&item, who.model(), (batch_names, stored), now)?;
        let (routing, arm, resp) = match who {
            Answerer::Plain(model) => return Ok(self.scored(&model, item, &input, as_of, locale)),
            Answerer::Arm {
                routing,
                arm,
                model,
            } => {
                let resp = self.scored(model, item, &input, as_of, locale);
                self.measure_arm(routing, arm, model, &resp, input.features, as_of);
                (routing, arm, resp)
            }
            Answerer::Holdout { routing, model } => {
                let resp = pb::ScoreResponse {
                    customer_id: item.customer_id,
                    horizon_days: model.bundle.horizon_days,
                    holdout: true,
                    ..Default::default()
                };
                (routing, HOLDOUT_ARM, resp)
            }
        };
        Ok(self.expose(routing, arm, resp, as_of, now, start))
    }

    /// The item's feature vector and the instant it describes.
    fn features(
        &self,
        item: &pb::ScoreRequest,
        model: &Model,
        (batch_names, stored): (&BatchNames, Option<Stored>),
        now: i64,
    ) -> Result<(ModelInput, i64), ScoringError> {
        match &item.input {
            Some(pb::score_request::Input::Features(fs)) => {
                let f = match batch_names {
                    Some(Ok(plan)) if fs.names.is_empty() => plan.features(&fs.values)?,
                    Some(Err(e)) if fs.names.is_empty() => return Err(e.clone()),
                    _ => scoring::features_from_named(model.schema(), &fs.names, &fs.values)?,
                };
                // The instant the features describe: the timing's dates count from it.
                let as_of = match &item.as_of {
                    Some(t) => convert::timestamp(t, "as_of")?,
                    None => now,
                };
                Ok((f.into(), as_of))
            }
            Some(pb::score_request::Input::History(h)) => {
                let as_of = match &item.as_of {
                    Some(t) => convert::timestamp(t, "as_of")?,
                    None => now,
                };
                let txs = convert::transactions(h, &self.limits)?;
                let input = scoring::features_from_history(model, &txs, as_of, &self.limits)?;
                Ok((input, as_of))
            }
            None => {
                let state = stored.unwrap_or_else(|| Err(no_state()))?;
                let state = state
                    .ok_or_else(|| ScoringError::CustomerNotFound(item.customer_id.clone()))?;
                let as_of = match &item.as_of {
                    Some(t) => convert::timestamp(t, "as_of")?,
                    None => state.scored_at(now),
                };
                let summary = state
                    .summary()
                    .map_err(|e| ScoringError::StateUnusable(e.to_string()))?;
                let input = ModelInput::of(model, &summary, as_of).map_err(|_| {
                    ScoringError::invalid(
                        "as_of",
                        "is not after the customer's last stored transaction",
                    )
                })?;
                Ok((input, as_of))
            }
        }
    }

    /// The stored states of the items scored by id (one read for the whole batch); `None`
    /// for the others.
    async fn fetch_stored(&self, items: &[pb::ScoreRequest]) -> Vec<Option<Stored>> {
        let by_id: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].input.is_none())
            .collect();
        let mut out: Vec<Option<Stored>> = (0..items.len()).map(|_| None).collect();
        if by_id.is_empty() {
            return out;
        }
        let Some(store) = &self.state else {
            for i in by_id {
                out[i] = Some(Err(no_state()));
            }
            return out;
        };
        let ids: Vec<&str> = by_id
            .iter()
            .map(|&i| items[i].customer_id.as_str())
            .collect();
        let started = Instant::now();
        let got = store.get_many(&ids).await;
        self.metrics
            .state_latency
            .with_label_values(&["get"])
            .observe(started.elapsed().as_secs_f64());
        match got {
            Ok(states) => {
                for (i, s) in by_id.into_iter().zip(states) {
                    out[i] = Some(Ok(s));
                }
            }
            Err(e) => {
                let e = ScoringError::from(e);
                for i in by_id {
                    out[i] = Some(Err(e.clone()));
                }
            }
        }
        out
    }

    /// An arm's answer in the experiment's histograms, and queued for its shadows.
    fn measure_arm(
        &self,
        routing: &Arc<Routing>,
        arm: &str,
        model: &Model,
        r: &pb::ScoreResponse,
        features: FeatureVector,
        as_of: i64,
    ) {
        let labels = [routing.experiment.as_str(), arm, model.version.as_str()];
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
                features,
                as_of,
            });
        }
    }

    /// Names the experiment and arm in the answer, counts it, and appends the exposure.
    fn expose(
        &self,
        routing: &Routing,
        arm: &str,
        mut resp: pb::ScoreResponse,
        as_of: i64,
        now: i64,
        start: Option<Instant>,
    ) -> pb::ScoreResponse {
        let exp = routing.experiment.as_str();
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
                as_of: fmt_ts(as_of),
                at: fmt_ts(now),
            });
            self.metrics
                .exposures
                .with_label_values(&[if queued { "queued" } else { "dropped" }])
                .inc();
        }
        resp
    }

    fn scored(
        &self,
        model: &Model,
        item: pb::ScoreRequest,
        input: &ModelInput,
        as_of: i64,
        locale: Locale,
    ) -> pb::ScoreResponse {
        let explain = item.explain;
        let how = Explain {
            reasons: explain,
            locale,
        };
        let scored = scoring::score_input(model, input, as_of, how);
        model.served(&input.features, &scored, now());
        let mut resp = convert::response(
            item.customer_id,
            scored,
            &model.version,
            model.bundle.horizon_days,
        );
        if explain {
            resp.features = Some(pb::Features {
                names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
                values: input.features.to_vec(),
            });
        }
        resp
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn no_state() -> ScoringError {
    ScoringError::invalid(
        "input",
        "give features or history: this server keeps no customer state to score by id (--state off)",
    )
}

impl ScoringService {
    /// A batch's items scored on the pool, a chunk at a time; stops between chunks once the
    /// deadline has passed.
    async fn score_batch(
        &self,
        items: Vec<(pb::ScoreRequest, Option<Stored>)>,
        snap: Arc<Snapshot>,
        (plan, pins): (Arc<BatchNames>, Arc<Pins>),
        outcome: &Outcome,
    ) -> Result<Vec<Result<pb::ScoreResponse, ScoringError>>, Status> {
        let now = now();
        let mut out = Vec::with_capacity(items.len());
        for chunk in super::pool::chunks(items, |(i, _)| cost(i) + 1) {
            if outcome.expired() {
                return Err(Status::deadline_exceeded(format!(
                    "the deadline passed after {} of the batch's items; the rest were not scored",
                    out.len()
                )));
            }
            let (svc, snap, plan, pins) = (self.clone(), snap.clone(), plan.clone(), pins.clone());
            let scored = self
                .pool
                .run(move || {
                    chunk
                        .into_iter()
                        .map(|(item, stored)| {
                            svc.score_one(item, &snap, (&plan, stored, &pins), now, None)
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            self.metrics.scored_items.inc_by(scored.len() as u64);
            out.extend(scored);
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl Scoring for ScoringService {
    async fn drift(
        &self,
        req: Request<pb::DriftRequest>,
    ) -> Result<Response<pb::DriftResponse>, Status> {
        let start = Instant::now();
        let mut outcome = Outcome::new(&self.metrics, ("Drift", &req), start, None);
        let Some(model) = self.models.active() else {
            outcome.finish(convert::scoring_code(&ScoringError::NotReady), "");
            return Err(convert::scoring_status(ScoringError::NotReady));
        };
        outcome.finish(Code::Ok, &model.version);
        Ok(Response::new(convert::drift(&model, now())))
    }

    async fn score(
        &self,
        req: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let start = Instant::now();
        let mut outcome = Outcome::new(&self.metrics, ("Score", &req), start, None);
        let _slot = super::pool::slot(&self.in_flight)
            .inspect_err(|_| outcome.finish(Code::ResourceExhausted, ""))?;
        let item = req.into_inner();
        let snap = self.snapshot();
        outcome.version = snap.version().to_string();
        let stored = self
            .fetch_stored(std::slice::from_ref(&item))
            .await
            .pop()
            .flatten();
        let pins = self.resolve_pins(std::slice::from_ref(&item)).await;
        // One customer is cheap (its history is bounded): scored where it arrived.
        let result = self.score_one(item, &snap, (&None, stored, &pins), now(), Some(start));
        match &result {
            Ok(r) => outcome.finish(Code::Ok, &r.model_version),
            Err(e) => outcome.finish(convert::scoring_code(e), snap.version()),
        }
        self.metrics.scored_items.inc();
        result.map(Response::new).map_err(convert::scoring_status)
    }

    async fn batch_score(
        &self,
        req: Request<pb::BatchScoreRequest>,
    ) -> Result<Response<pb::BatchScoreResponse>, Status> {
        let start = Instant::now();
        // The deadline as counted from the request's headers, when the outcomes layer saw them.
        let deadline = req
            .extensions()
            .get::<super::outcomes::Counted>()
            .map_or_else(|| super::pool::deadline(req.metadata(), start), |c| c.1);
        let mut outcome = Outcome::new(&self.metrics, ("BatchScore", &req), start, deadline);
        let _slot = super::pool::slot(&self.in_flight)
            .inspect_err(|_| outcome.finish(Code::ResourceExhausted, ""))?;
        let batch = req.into_inner();
        // One state for the whole batch: a swap mid-batch never mixes versions or routings.
        let snap = Arc::new(self.snapshot());
        outcome.version = snap.version().to_string();
        let total: usize = batch.items.iter().map(cost).sum();
        let checked = scoring::check_batch_len("items", batch.items.len(), &self.limits)
            .and_then(|()| scoring::check_request_cost("items", total, &self.limits));
        if let Err(e) = checked {
            outcome.finish(convert::scoring_code(&e), snap.version());
            return Err(convert::scoring_status(e));
        }
        // Every model has this build's schema (Model::new), so one plan serves every item.
        let plan = (!batch.feature_names.is_empty())
            .then(|| NamePlan::new(&FeatureSchema::current(), &batch.feature_names));
        let stored = self.fetch_stored(&batch.items).await;
        let pins = self.resolve_pins(&batch.items).await;
        let items = batch.items.into_iter().zip(stored).collect();
        let scored = self
            .score_batch(
                items,
                snap.clone(),
                (Arc::new(plan), Arc::new(pins)),
                &outcome,
            )
            .await
            .inspect_err(|e| outcome.finish(e.code(), snap.version()))?;
        let (mut ok, mut failed) = (0u64, 0u64);
        let results = scored
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                let result = match r {
                    Ok(s) => {
                        ok += 1;
                        pb::batch_item::Result::Score(s)
                    }
                    Err(e) => {
                        failed += 1;
                        pb::batch_item::Result::Error(convert::item_error(e))
                    }
                };
                pb::BatchItem {
                    index: index as u32,
                    result: Some(result),
                }
            })
            .collect();
        self.metrics.count_batch_items(ok, failed);
        outcome.finish(Code::Ok, snap.version());
        Ok(Response::new(pb::BatchScoreResponse { results }))
    }
}
