//! Numbered records under a folder, each written create-if-absent: the compare-and-swap and
//! the audit history that aliases and traffic documents share.
//!
//! The record with the highest number is the current value. Two writers racing for the same
//! next number collide on one key and exactly one wins; this needs only `PutMode::Create`,
//! which every object_store backend has (the local filesystem has no `PutMode::Update`).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{path::Path, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{Registry, RegistryError};

fn seq_of(p: &Path) -> Option<u64> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

impl Registry {
    fn journal_key(&self, dir: &[&str], seq: u64) -> Path {
        let name = format!("{seq:012}.json");
        let mut parts = dir.to_vec();
        parts.push(&name);
        self.key(&parts)
    }

    /// The record numbers in `dir`, ascending.
    pub(super) async fn journal_seqs(&self, dir: &[&str]) -> Result<Vec<u64>, RegistryError> {
        let mut seqs: Vec<u64> = self
            .store
            .list(Some(&self.key(dir)))
            .try_filter_map(|m| futures::future::ready(Ok(seq_of(&m.location))))
            .try_collect()
            .await?;
        seqs.sort_unstable();
        Ok(seqs)
    }

    pub(super) async fn journal_read(
        &self,
        dir: &[&str],
        seq: u64,
    ) -> Result<Bytes, RegistryError> {
        Ok(self
            .store
            .get(&self.journal_key(dir, seq))
            .await?
            .bytes()
            .await?)
    }

    /// Writes record `seq`; `Ok(false)` when another writer took that number first.
    pub(super) async fn journal_create(
        &self,
        dir: &[&str],
        seq: u64,
        body: Vec<u8>,
    ) -> Result<bool, RegistryError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(
                &self.journal_key(dir, seq),
                PutPayload::from_bytes(Bytes::from(body)),
                opts,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The folder names under `dir` (alias names, traffic documents), sorted.
    pub(super) async fn journal_names(&self, dir: &str) -> Result<Vec<String>, RegistryError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.key(&[dir])))
            .await?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}
