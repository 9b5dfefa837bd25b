//! The build queue: an accepted upload holds a slot until its build ends, so the server
//! refuses uploads instead of piling up folders on disk; a fixed number of builders run at
//! once, first come first served.

use crate::base::BaseChoice;
use crate::model::spec::ModelSpec;
use crate::pipeline::push::{OnePass, Remote};
use crate::pipeline::{self, BuildRequest, BuildSettings, Home};
use crate::remote::{Quiet, Watcher};
use crate::store::Store;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Builds {
    /// Accepted and not ended: what a stopping server must mark Failed.
    unfinished: Arc<Mutex<BTreeSet<(String, u32)>>>,
    slots: Arc<Semaphore>,
    builders: Arc<Semaphore>,
    capacity: usize,
    /// Where uploaded folders wait for their build.
    pub uploads: PathBuf,
    /// With `serve --registry`: where each version is pushed once built (the local store is
    /// then a cache of what was built here).
    remote: Option<Arc<Remote>>,
}

/// An accepted upload, its version taken, waiting for a builder.
pub struct Job {
    pub spec: ModelSpec,
    pub base: Option<BaseChoice>,
    pub version: u32,
    /// The upload's temporary folder, removed once the build ends.
    pub workdir: PathBuf,
    pub slot: OwnedSemaphorePermit,
}

impl Builds {
    pub fn new(builders: usize, queue: usize, uploads: PathBuf, remote: Option<Remote>) -> Builds {
        Builds {
            unfinished: Arc::default(),
            slots: Arc::new(Semaphore::new(queue)),
            builders: Arc::new(Semaphore::new(builders)),
            capacity: queue,
            uploads,
            remote: remote.map(Arc::new),
        }
    }

    /// A place in the queue, or `None` when it is full.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts the job when a builder is free; its outcome is in the catalogue.
    pub fn submit(&self, home: &Home, store: &Store, job: Job) {
        let builders = self.builders.clone();
        let catalog_path = home.catalog.clone();
        let settings = BuildSettings::new(home);
        let store = store.clone();
        let remote = self.remote.clone();
        let key = (job.spec.name.clone(), job.version);
        lock(&self.unfinished).insert(key.clone());
        let unfinished = self.unfinished.clone();
        tokio::spawn(async move {
            let Ok(_builder) = builders.acquire_owned().await else {
                return;
            };
            let name = format!("{}:{}", job.spec.name, job.version);
            let outcome = tokio::task::spawn_blocking(move || {
                run(&catalog_path, &store, &settings, remote.as_deref(), job)
            })
            .await;
            lock(&unfinished).remove(&key);
            match outcome {
                Ok(Ok(())) => tracing::info!("build {name} Finished"),
                Ok(Err(error)) => tracing::warn!("build {name} Failed: {error}"),
                Err(error) => tracing::error!("build {name} stopped: {error}"),
            }
        });
    }

    /// The server stops: builds still waiting or running will not finish in this process.
    pub fn abandon(&self, catalog_path: &crate::catalog::Location) {
        let unfinished = std::mem::take(&mut *lock(&self.unfinished));
        if unfinished.is_empty() {
            return;
        }
        let Ok(catalog) = crate::catalog::open(catalog_path) else {
            return; // the next start finds them by their dead owner
        };
        for (name, version) in unfinished {
            tracing::warn!("build {name}:{version} Failed: the server stopped");
            let _ = catalog.fail(
                &name,
                version,
                "the server stopped before the build finished; upload the model again",
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(
    catalog_path: &crate::catalog::Location,
    store: &Store,
    settings: &BuildSettings,
    remote: Option<&Remote>,
    job: Job,
) -> Result<(), String> {
    let Job {
        spec,
        base,
        version,
        workdir,
        slot,
    } = job;
    let result = (|| {
        let catalog = crate::catalog::open(catalog_path).map_err(|e| e.to_string())?;
        let request = BuildRequest {
            spec: &spec,
            base: base.as_ref(),
            settings,
        };
        let watcher: Watcher = Arc::new(Quiet);
        let built = match remote {
            Some(remote) => {
                let pass = OnePass::connect(remote, &spec.name, settings).map_err(|e| {
                    let _ = catalog.fail(&spec.name, version, &e.to_string());
                    e.to_string()
                })?;
                let request = BuildRequest {
                    settings: &pass.settings,
                    ..request
                };
                pipeline::build_version(
                    catalog.as_ref(),
                    store,
                    &request,
                    version,
                    &mut |_| {},
                    &mut pass.after_build(store, &spec.name, &watcher),
                )
            }
            None => pipeline::build_version(
                catalog.as_ref(),
                store,
                &request,
                version,
                &mut |_| {},
                &mut |_, _, _| Ok(None),
            ),
        };
        built.map(|_| ()).map_err(|e| e.to_string())
    })();
    if let Err(error) = std::fs::remove_dir_all(&workdir) {
        tracing::warn!("cannot remove {}: {error}", workdir.display());
    }
    drop(slot);
    result
}
