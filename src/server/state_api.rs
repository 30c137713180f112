//! The `CustomerState` service: purchases into the live state, and erasures.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::Metrics;
use crate::proto::v1 as pb;
use crate::proto::v1::customer_state_server::CustomerState;
use crate::scoring::{self, Limits, ScoringError};
use crate::state::{CustomerStore, Outcome};

pub struct StateService {
    pub store: Option<Arc<dyn CustomerStore>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Seconds an event may trail the customer's latest one.
    pub lateness: i64,
    /// The admin token's gate, which Forget needs; without one, Forget is refused.
    pub admin: Option<Arc<super::auth::Gate>>,
}

impl StateService {
    fn store(&self) -> Result<&Arc<dyn CustomerStore>, Status> {
        self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("this server keeps no customer state (--state off)")
        })
    }

    async fn record(
        &self,
        req: pb::RecordPurchasesRequest,
    ) -> Result<pb::RecordPurchasesResponse, Status> {
        let store = self.store()?;
        scoring::check_batch_len("events", req.events.len(), &self.limits)
            .map_err(convert::scoring_status)?;
        let now = chrono::Utc::now().timestamp();
        let events = req
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| convert::event(e, i, now))
            .collect::<Result<Vec<_>, ScoringError>>()
            .map_err(convert::scoring_status)?;
        let started = Instant::now();
        let outcomes = store
            .apply(&events, self.lateness)
            .await
            .map_err(|e| convert::scoring_status(e.into()))?;
        self.metrics
            .state_latency
            .with_label_values(&["apply"])
            .observe(started.elapsed().as_secs_f64());
        let mut r = pb::RecordPurchasesResponse::default();
        for (i, o) in outcomes.iter().enumerate() {
            self.metrics
                .state_events
                .with_label_values(&[o.as_str()])
                .inc();
            match o {
                Outcome::Applied => r.applied += 1,
                Outcome::Duplicate => r.duplicate += 1,
                Outcome::Late => r.late += 1,
                Outcome::Rejected => r.rejected += 1,
            }
            if *o != Outcome::Applied {
                r.not_applied.push(pb::EventResult {
                    index: i as u32,
                    outcome: o.as_str().to_string(),
                });
            }
        }
        Ok(r)
    }
}

#[tonic::async_trait]
impl CustomerState for StateService {
    async fn record_purchases(
        &self,
        req: Request<pb::RecordPurchasesRequest>,
    ) -> Result<Response<pb::RecordPurchasesResponse>, Status> {
        let start = Instant::now();
        let result = self.record(req.into_inner()).await;
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        self.metrics
            .observe_request("RecordPurchases", code, "", start);
        result.map(Response::new)
    }

    async fn forget(
        &self,
        req: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let Some(admin) = &self.admin else {
            return Err(Status::unauthenticated(
                "Forget needs the admin token, and this server has none (--admin-token)",
            ));
        };
        admin
            .admit(super::auth::authorization(&req), "Forget")
            .await?;
        let r = req.into_inner();
        if r.customer_id.is_empty() || r.customer_id.len() > 256 {
            return Err(Status::invalid_argument(
                "customer_id: must be 1 to 256 bytes",
            ));
        }
        if r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: is empty; say why, for the erasure record",
            ));
        }
        let actor = if r.actor.is_empty() {
            "grpc-admin"
        } else {
            &r.actor
        };
        let erasure = self
            .store()?
            .forget(&r.customer_id, actor, &r.reason)
            .await
            .map_err(|e| convert::scoring_status(e.into()))?;
        Ok(Response::new(pb::ForgetResponse {
            found: erasure.found,
            erasure_hash: erasure.customer,
        }))
    }
}
