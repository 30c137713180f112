//! The model registry on object storage: where versions are published, found and loaded.
//!
//! Layout under the registry root:
//! ```text
//! versions/<version>/model.bin       the bundle, written first
//! versions/<version>/manifest.json   written last, create-if-absent: a version exists iff this does
//! aliases/<name>/<seq>.json          one record per move of an alias; the highest is current
//! traffic/<alias>/<seq>.json         the alias's A/B experiment, moved the same way
//! ```
//! Works on any `Arc<dyn ObjectStore>`; [`open_store`] picks the backend from a URL.
//! Nothing here knows about gRPC.

mod alias;
mod journal;
mod store;
mod traffic;

use std::sync::Arc;

use bytes::Bytes;
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::model::{Manifest, ModelBundle, ModelError, BUNDLE_FILE, MANIFEST_FILE};

pub use crate::routing::{Experiment, HOLDOUT_ARM};
pub use alias::{AliasJournal, AliasRecord, AliasState, CorruptRecord, Expect, Move, Unserved};
pub use store::open_store;
pub use traffic::TrafficRecord;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "registry {0} does not exist (no such folder; --registry or LOYALSCORE_REGISTRY names it)"
    )]
    NoSuchRegistry(String),
    #[error("version id {0:?} is not valid (letters, digits, '.', '_' and '-' only)")]
    BadVersionId(String),
    #[error("version {0} does not exist")]
    VersionNotFound(String),
    #[error("version {0} already exists; versions are immutable")]
    VersionExists(String),
    #[error("version {version}: {source}")]
    Corrupt {
        version: String,
        #[source]
        source: ModelError,
    },
    #[error("alias name {0:?} is not valid (letters, digits, '.', '_' and '-' only)")]
    BadAliasName(String),
    #[error("alias {0} does not exist")]
    AliasNotFound(String),
    #[error("alias {0} has no previous version to roll back to")]
    NothingToRollBack(String),
    #[error("alias {alias} points at {actual}, not the expected {expected}; nothing changed")]
    ExpectMismatch {
        alias: String,
        expected: String,
        actual: String,
    },
    #[error("alias {alias} already points at {version}; nothing changed")]
    Unchanged { alias: String, version: String },
    #[error("lost a race on alias {alias}: {actor} moved it to {winner} first; nothing changed")]
    LostRace {
        alias: String,
        winner: String,
        actor: String,
    },
    #[error("alias {alias} record {seq} is corrupt: {reason}")]
    CorruptAlias {
        alias: String,
        seq: u64,
        reason: String,
    },
    #[error("alias {alias}: record {seq} is corrupt ({reason}); nothing changed. `loyalscore alias repair {alias}` supersedes it with a new record")]
    NeedsRepair {
        alias: String,
        seq: u64,
        reason: String,
    },
    #[error("alias {0} has no corrupt record on top; nothing to repair")]
    NothingToRepair(String),
    #[error("alias {0} has no readable record to go back to: repair it with --to VERSION")]
    NoGoodRecord(String),
    #[error("traffic: {0}")]
    BadTraffic(#[from] crate::routing::ExperimentError),
    #[error("traffic of alias {0}: the experiment is already running exactly so; nothing changed")]
    TrafficUnchanged(String),
    #[error("a reason is required: say why, for the audit history (--reason on the command line, `reason` in the admin RPCs)")]
    ReasonRequired,
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("alias {0} has no experiment running")]
    NoExperiment(String),
    #[error("traffic of alias {alias} is at record {actual}, not the expected {expected}; nothing changed")]
    TrafficMoved {
        alias: String,
        expected: u64,
        actual: u64,
    },
    #[error("traffic of alias {alias} record {seq} is corrupt: {reason}")]
    CorruptTraffic {
        alias: String,
        seq: u64,
        reason: String,
    },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// The versions of a registry, newest first.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub versions: Vec<Manifest>,
    /// Version ids whose manifest is unreadable, with the reason.
    pub broken: Vec<(String, String)>,
}

/// A registry rooted at some prefix of an object store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

/// Version ids become path segments: keep them to a safe alphabet.
pub fn check_version_id(id: &str) -> Result<(), RegistryError> {
    if crate::model::is_safe_name(id) {
        Ok(())
    } else {
        Err(RegistryError::BadVersionId(id.to_string()))
    }
}

impl Registry {
    /// Opens the registry a URL or path names (see [`open_store`]).
    pub fn open(url: &str) -> Result<Self, RegistryError> {
        let (store, root) = open_store(url)?;
        Ok(Registry {
            store,
            root,
            url: url.to_string(),
        })
    }

    pub fn new(store: Arc<dyn ObjectStore>, root: Path, url: impl Into<String>) -> Self {
        Registry {
            store,
            root,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local folder this registry names, when it does not exist (an object store cannot
    /// be told apart from an empty one this cheaply, so it never counts as missing).
    pub fn missing_dir(&self) -> Option<std::path::PathBuf> {
        store::local_dir(&self.url).filter(|d| !d.is_dir())
    }

    /// Fails with [`RegistryError::NoSuchRegistry`] for a folder that does not exist: what a
    /// command that only reads checks first, so a misspelt path is not an empty registry.
    pub fn must_exist(&self) -> Result<(), RegistryError> {
        match self.missing_dir() {
            Some(d) => Err(RegistryError::NoSuchRegistry(d.display().to_string())),
            None => Ok(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.root.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    /// Publishes a version: every file first, then the manifest, each create-if-absent, so a
    /// reader never sees half a version and nothing existing is ever overwritten.
    pub async fn publish(
        &self,
        manifest: &Manifest,
        files: &[(&str, Bytes)],
    ) -> Result<(), RegistryError> {
        let v = &manifest.version;
        check_version_id(v)?;
        for (name, bytes) in files {
            manifest
                .verify_file(name, bytes)
                .map_err(|source| RegistryError::Corrupt {
                    version: v.clone(),
                    source,
                })?;
            self.put_new(&self.key(&["versions", v, name]), bytes.clone(), v)
                .await?;
        }
        self.put_new(
            &self.key(&["versions", v, MANIFEST_FILE]),
            Bytes::from(manifest.to_json()?),
            v,
        )
        .await
    }

    async fn put_new(&self, key: &Path, bytes: Bytes, version: &str) -> Result<(), RegistryError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(RegistryError::VersionExists(version.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every complete version's manifest, newest first, and the versions whose manifest
    /// cannot be read (listed, not hidden: a registry should never lose sight of one).
    pub async fn list_versions(&self) -> Result<Listing, RegistryError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.key(&["versions"])))
            .await?;
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        // The local store lists in no particular order; ids sort by time.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Listing::default();
        for id in ids {
            match self.manifest(&id).await {
                Ok(m) => out.versions.push(m),
                // Files without a manifest: a publish in progress or one that died. Not a version.
                Err(RegistryError::VersionNotFound(_)) => {}
                Err(e @ (RegistryError::Corrupt { .. } | RegistryError::BadVersionId(_))) => {
                    out.broken.push((id, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads one version's manifest.
    pub async fn manifest(&self, version: &str) -> Result<Manifest, RegistryError> {
        check_version_id(version)?;
        let bytes = self
            .get(&self.key(&["versions", version, MANIFEST_FILE]), version)
            .await?;
        let m = Manifest::from_json(&bytes).map_err(|source| RegistryError::Corrupt {
            version: version.to_string(),
            source,
        })?;
        if m.version != version {
            return Err(RegistryError::Corrupt {
                version: version.to_string(),
                source: ModelError::Inconsistent(format!("manifest names version {}", m.version)),
            });
        }
        Ok(m)
    }

    /// One file of a version, checked against the manifest's checksum. `Ok(None)` when the
    /// manifest lists no such file (a version made before the file existed).
    pub async fn file(
        &self,
        manifest: &Manifest,
        name: &str,
    ) -> Result<Option<Bytes>, RegistryError> {
        let version = &manifest.version;
        if !manifest.files.iter().any(|f| f.name == name) {
            return Ok(None);
        }
        let corrupt = |source| RegistryError::Corrupt {
            version: version.to_string(),
            source,
        };
        let bytes = match self
            .get(&self.key(&["versions", version, name]), version)
            .await
        {
            Err(RegistryError::VersionNotFound(_)) => {
                return Err(corrupt(ModelError::Inconsistent(format!(
                    "file {name} is missing"
                ))))
            }
            other => other?,
        };
        manifest.verify_file(name, &bytes).map_err(corrupt)?;
        Ok(Some(bytes))
    }

    /// Loads a version for scoring: its manifest and its bundle, verified against the
    /// manifest's checksum (the report and evaluation files are not read).
    pub async fn load(&self, version: &str) -> Result<(Manifest, ModelBundle), RegistryError> {
        let manifest = self.manifest(version).await?;
        let corrupt = |source| RegistryError::Corrupt {
            version: version.to_string(),
            source,
        };
        let bytes = self
            .file(&manifest, BUNDLE_FILE)
            .await?
            .ok_or_else(|| corrupt(ModelError::NotInManifest(BUNDLE_FILE.into())))?;
        let bundle = ModelBundle::decode(&bytes).map_err(corrupt)?;
        if bundle.schema != manifest.feature_schema {
            return Err(corrupt(ModelError::Inconsistent(
                "bundle and manifest disagree on the feature schema".into(),
            )));
        }
        Ok((manifest, bundle))
    }

    async fn get(&self, key: &Path, version: &str) -> Result<Bytes, RegistryError> {
        match self.store.get(key).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(RegistryError::VersionNotFound(version.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
