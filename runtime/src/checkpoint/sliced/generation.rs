//! Generations of a sliced checkpoint directory: every save writes its
//! slices under new names (`stage-0.gen-<g>.safetensors`), so the files the
//! current manifest names are never touched until the next manifest is in
//! place. A save that dies midway (a rank killed after some slices, a full
//! disk) leaves the previous generation whole; what it leaves behind —
//! slices no manifest names, temporary files of the atomic writer — is
//! removed by [`remove_unused`] after the next manifest, or on resume.

use std::path::Path;

use super::{read_manifest, Layout, Manifest, MANIFEST};
use crate::checkpoint::{temporary_of, CheckpointError};

/// Creates `dir` for a sliced checkpoint of `network` cut as `layout` and
/// returns the generation the next save writes: one past the current
/// manifest's, or 1 in a directory without one. A manifest of another
/// network or layout is refused (its slices would be left beside the new
/// ones), and so is one that cannot be read (a save must not bury a
/// checkpoint it cannot account for).
pub fn prepare_dir(dir: &Path, network: &str, layout: Layout) -> Result<u64, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|error| CheckpointError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    if !dir.join(MANIFEST).exists() {
        return Ok(1);
    }
    let m = read_manifest(dir)?;
    m.expect(dir, network, layout)?;
    m.generation
        .checked_add(1)
        .ok_or_else(|| CheckpointError::Corrupt {
            path: dir.join(MANIFEST),
            reason: format!("generation {} has no successor", m.generation),
        })
}

/// What each rank gathered after writing its slices (`[generation, hash of
/// each of its slices…]`, rank after rank, every rank holding the same
/// number of slices) as the generation and the hashes in slice order. The
/// ranks must have read the same manifest, hence chosen the same
/// generation; if not (a directory not shared, or not coherent, across
/// them) the save is refused on every rank alike.
pub fn gathered(dir: &Path, all: &[u64], ranks: usize) -> Result<(u64, Vec<u64>), CheckpointError> {
    let per = all.len() / ranks.max(1);
    if per == 0 || per * ranks != all.len() {
        return Err(CheckpointError::Invalid(format!(
            "{} gathered values from {ranks} ranks",
            all.len()
        )));
    }
    let generation = all[0];
    let mut hashes = Vec::with_capacity(all.len() - ranks);
    for (rank, block) in all.chunks(per).enumerate() {
        if block[0] != generation {
            return Err(CheckpointError::Invalid(format!(
                "the ranks disagree on the save's generation in {} (rank 0: {generation}, rank \
                 {rank}: {}): every rank must see the same checkpoint directory",
                dir.display(),
                block[0]
            )));
        }
        hashes.extend_from_slice(&block[1..]);
    }
    Ok((generation, hashes))
}

/// Deletes from `dir` what the manifest `m` does not name: slices of other
/// generations (older saves, or the orphans of a save that died before its
/// manifest) and the atomic writer's temporary files of slices and of the
/// manifest. Only names of this format are touched (`stage-<i>.gen-<g>.safetensors`,
/// `shard-…`, `.NAME.tmp-PID-N`); anything else in the directory stays.
/// Called by rank 0 once `m` is in place (no rank is writing then), and on
/// resume. Best effort: a file that cannot be removed is left.
pub fn remove_unused(dir: &Path, m: &Manifest) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep: Vec<String> = (0..m.layout.slices()).map(|i| m.file_name(i)).collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Every rank's writer has finished when this runs (see above), so
        // a temporary's process need not be asked whether it is alive.
        let ours = match temporary_of(name) {
            Some((target, _)) => target == MANIFEST || is_slice_name(target),
            None => is_slice_name(name) && !keep.iter().any(|k| k == name),
        };
        if ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` is a slice file's name of any layout and generation.
fn is_slice_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_suffix(".safetensors") else {
        return false;
    };
    let Some((slice, generation)) = rest.split_once(".gen-") else {
        return false;
    };
    let index = [Layout::Stages(1), Layout::Split(1)]
        .iter()
        .find_map(|l| slice.strip_prefix(l.prefix())?.strip_prefix('-'));
    index.is_some_and(digits) && digits(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_format_are_recognised() {
        assert!(is_slice_name("stage-0.gen-12.safetensors"));
        assert!(is_slice_name("shard-3.gen-1.safetensors"));
        for other in [
            "stage-0.safetensors",
            "stage-.gen-1.safetensors",
            "stage-x.gen-1.safetensors",
            "stage-0.gen-.safetensors",
            "stage-0.gen-1.safetensors.bak",
            "weights.safetensors",
            "my-stage-0.gen-1.safetensors",
        ] {
            assert!(!is_slice_name(other), "{other}");
        }
        assert_eq!(
            temporary_of(".stage-0.gen-2.safetensors.tmp-123-0"),
            Some(("stage-0.gen-2.safetensors", 123))
        );
        assert_eq!(
            temporary_of(".manifest.txt.tmp-9-14"),
            Some(("manifest.txt", 9))
        );
        assert_eq!(temporary_of(".stage-0.gen-2.safetensors.tmp-x-0"), None);
        assert_eq!(temporary_of(".stage-0.gen-2.safetensors.tmp-1-"), None);
        assert_eq!(temporary_of("stage-0.gen-2.safetensors"), None);
    }

    #[test]
    fn the_ranks_must_agree_on_the_generation() {
        let dir = Path::new("ckpt");
        assert_eq!(
            gathered(dir, &[4, 10, 11, 4, 12, 13], 2).unwrap(),
            (4, vec![10, 11, 12, 13])
        );
        let err = gathered(dir, &[4, 10, 5, 12], 2).unwrap_err().to_string();
        assert!(err.contains("rank 0: 4, rank 1: 5"), "{err}");
    }
}
