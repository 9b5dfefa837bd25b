//! `mlambda catalog migrate`: every version of one catalogue copied into another (SQLite into
//! PostgreSQL when a team outgrows one host, or back), then read again from the target and
//! compared, version by version, with the source.

use super::{CatalogError, Location, Status, VersionRecord, open};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Migrated {
    pub models: usize,
    pub versions: usize,
    /// Versions written now; the others were in the target already, identical.
    pub copied: usize,
}

/// Copies `from` into `to` and checks that the target holds each version with the same status
/// and digest. Refuses while a build is open in `from` (its record is not final yet), and
/// writes nothing when a version of `from` is recorded differently in `to`.
pub fn copy(from: &Location, to: &Location) -> Result<Migrated, CatalogError> {
    if from == to {
        return Err(CatalogError::Invalid(format!(
            "--from and --to are the same catalogue ({})",
            from.display()
        )));
    }
    let source = open(from)?;
    let mut records = Vec::new();
    let models = source.models()?;
    for model in &models {
        records.extend(source.versions(&model.name)?);
    }
    if let Some(open) = records
        .iter()
        .find(|r| matches!(r.status, Status::Pending | Status::Running))
    {
        return Err(CatalogError::Invalid(format!(
            "{}:{} is still {:?} in {}: migrate once no build is running",
            open.name,
            open.version,
            open.status,
            from.display()
        )));
    }
    let mut target = open(to)?;
    let copied = target.import(&records)?;
    for record in &records {
        let there = target.version(&record.name, record.version)?;
        let same = there.as_ref().is_some_and(|t| {
            t.status == record.status
                && t.digest == record.digest
                && t.pushed_digest == record.pushed_digest
        });
        if !same {
            return Err(CatalogError::Invalid(format!(
                "{}:{} reads back from {} differently from {}: the copy is incomplete",
                record.name,
                record.version,
                to.display(),
                from.display()
            )));
        }
    }
    Ok(Migrated {
        models: models.len(),
        versions: records.len(),
        copied,
    })
}

/// Whether `record` is to be written into a catalogue that holds `here` (its digest and
/// status) under the same name and version: no when identical, an error when different.
pub(super) fn must_copy(
    record: &VersionRecord,
    here: Option<(Option<String>, Status)>,
    catalogue: &str,
) -> Result<bool, CatalogError> {
    match here {
        None => Ok(true),
        Some((digest, status)) if digest == record.digest && status == record.status => Ok(false),
        Some((digest, status)) => Err(CatalogError::Invalid(format!(
            "{}:{} is already recorded in {catalogue} as {status:?} {}, not {:?} {}: a recorded version is never overwritten, so nothing was copied",
            record.name,
            record.version,
            digest.as_deref().unwrap_or("(no image)"),
            record.status,
            record.digest.as_deref().unwrap_or("(no image)")
        ))),
    }
}
