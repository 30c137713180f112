//! The `Registry` admin service: the CLI's registry operations over gRPC, behind a token.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{alias_move, registry_status, version_info};
use super::models::Models;
use crate::proto::v1 as pb;
use crate::proto::v1::registry_server::Registry;
use crate::registry::{Expect, Experiment, Move, RegistryError, TrafficRecord};
use crate::routing::Arm;

pub struct RegistryService {
    pub models: Arc<Models>,
    pub gate: Arc<super::auth::Gate>,
}

impl RegistryService {
    async fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let header = super::auth::authorization(req);
        self.gate.admit(header, "the Registry service").await
    }

    fn alias_or_default(&self, alias: &str) -> String {
        if alias.is_empty() {
            self.models.alias().to_string()
        } else {
            alias.to_string()
        }
    }

    /// After moving the alias the server follows, load the new version before answering.
    async fn follow_up(&self, alias: &str) {
        if alias == self.models.alias() {
            self.models.refresh().await;
        }
    }
}

fn traffic_change(r: TrafficRecord) -> Result<pb::TrafficChange, Status> {
    let record_json =
        serde_json::to_string(&r).map_err(|e| registry_status(RegistryError::Encode(e)))?;
    Ok(pb::TrafficChange {
        record_json,
        alias: r.alias,
        seq: r.seq,
        action: r.action,
        experiment: r.experiment.map(|e| e.name).unwrap_or_default(),
        actor: r.actor,
        at: r.at,
        reason: r.reason,
    })
}

fn mv(actor: String, reason: String) -> Move {
    Move {
        actor: if actor.is_empty() {
            "grpc-admin".into()
        } else {
            actor
        },
        reason,
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        self.check(&req).await?;
        let listing = self
            .models
            .registry()
            .list_versions()
            .await
            .map_err(registry_status)?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: listing
                .versions
                .iter()
                .map(version_info)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::VersionInfo>, Status> {
        self.check(&req).await?;
        let m = self
            .models
            .registry()
            .manifest(&req.get_ref().version)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(version_info(&m)?))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::AliasMove>, Status> {
        self.check(&req).await?;
        let r = req.into_inner();
        let alias = self.alias_or_default(&r.alias);
        let expect = if r.expect.is_empty() {
            Expect::Any
        } else {
            Expect::parse(&r.expect)
        };
        let rec = self
            .models
            .registry()
            .set_alias(&alias, &r.version, &expect, &mv(r.actor, r.reason))
            .await
            .map_err(registry_status)?;
        self.follow_up(&alias).await;
        Ok(Response::new(alias_move(rec)))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::AliasMove>, Status> {
        self.check(&req).await?;
        let r = req.into_inner();
        let alias = self.alias_or_default(&r.alias);
        let rec = self
            .models
            .registry()
            .rollback_alias(&alias, &mv(r.actor, r.reason))
            .await
            .map_err(registry_status)?;
        self.follow_up(&alias).await;
        Ok(Response::new(alias_move(rec)))
    }

    async fn alias_history(
        &self,
        req: Request<pb::AliasHistoryRequest>,
    ) -> Result<Response<pb::AliasHistoryResponse>, Status> {
        self.check(&req).await?;
        let alias = self.alias_or_default(&req.get_ref().alias);
        let h = self
            .models
            .registry()
            .alias_history(&alias)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(pb::AliasHistoryResponse {
            moves: h.into_iter().map(alias_move).collect(),
        }))
    }

    async fn set_traffic(
        &self,
        req: Request<pb::SetTrafficRequest>,
    ) -> Result<Response<pb::TrafficChange>, Status> {
        self.check(&req).await?;
        let r = req.into_inner();
        let alias = self.alias_or_default(&r.alias);
        let experiment = Experiment {
            salt: r.salt,
            name: r.experiment,
            arms: r
                .arms
                .into_iter()
                .map(|a| Arm {
                    name: a.name,
                    version: a.version,
                    weight: a.weight,
                })
                .collect(),
            shadow: r.shadow,
            holdout: r.holdout,
        };
        let rec = self
            .models
            .registry()
            .set_traffic(&alias, experiment, r.expect_seq, &mv(r.actor, r.reason))
            .await
            .map_err(registry_status)?;
        self.follow_up(&alias).await;
        Ok(Response::new(traffic_change(rec)?))
    }

    async fn stop_traffic(
        &self,
        req: Request<pb::StopTrafficRequest>,
    ) -> Result<Response<pb::TrafficChange>, Status> {
        self.check(&req).await?;
        let r = req.into_inner();
        let alias = self.alias_or_default(&r.alias);
        let rec = self
            .models
            .registry()
            .stop_traffic(&alias, r.expect_seq, &mv(r.actor, r.reason))
            .await
            .map_err(registry_status)?;
        self.follow_up(&alias).await;
        Ok(Response::new(traffic_change(rec)?))
    }
}
