//! Sliced checkpoints (issue #24): a run whose parameters are cut across
//! ranks — pipeline stages, or split layers — saves one file per *slice*
//! (a stage, or a split rank's shard with its copy of the replicated
//! tail) and a manifest, all in one directory:
//!
//! ```text
//! ckpt/manifest.txt                  the network, the layout, the step, the generation,
//!                                    each slice's file and its hash
//! ckpt/stage-0.gen-7.safetensors     stage 0's parameters and optimizer state    (stages)
//! ckpt/shard-1.gen-7.safetensors     rank 1's slices and the tail                (split layers)
//! ```
//!
//! A slice file is an ordinary safetensors file written by the checkpoint
//! writer (atomic, per-tensor checksums, finiteness checked on load):
//! each parameter under its name with the part's shape, and each optimizer
//! state vector cut per parameter, `optimizer.<slot>.<name>` with the same
//! shape — so slicing and merging are the same operation on parameters and
//! on optimizer state. Its metadata names the network, the layout, the
//! slice's index, and each part model with its hash.
//!
//! Every save is a new *generation* ([`prepare_dir`]): its slices get new
//! names (`.gen-<g>`), each rank writes its own, then rank 0 writes the
//! manifest (atomically) naming exactly those files with their hashes.
//! Loading reads only what the manifest names, so a save that dies midway
//! leaves the previous generation whole and loadable; the files of older
//! generations, and the orphaned slices and temporary files of an
//! unfinished one, are deleted only once the new manifest is in place (and
//! on the next save or resume). A slice whose bytes are not the ones the
//! manifest records is refused, naming the file.
//!
//! [`merge`] turns the slices into one ordinary training checkpoint of the
//! whole network (what `fit`'s resume and `nnc eval` load), [`split`] one
//! ordinary checkpoint into the slices of a layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nnc_spec::ModelSpec;

use super::{encode, parse_tensors, write_file_atomic, CheckpointError, Tensor, TensorRef};
use crate::optim::OptimizerState;

mod convert;
mod generation;
pub use convert::{merge, split};
pub use generation::{gathered, prepare_dir, remove_unused};
pub use nnc_spec::slices::Layout;

/// File name of a sliced checkpoint's manifest inside its directory.
pub const MANIFEST: &str = "manifest.txt";

/// First line of a manifest: what it is, and its version.
const MAGIC: &str = "nnc sliced checkpoint 2";

/// Version of a slice file's metadata layout.
const SLICE_FORMAT: &str = "1";

/// One model's share of a slice to write.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The part model's spec (a stage, a shard, the tail).
    pub spec: &'a ModelSpec,
    /// Its parameters, laid out as `spec` says.
    pub params: &'a [f32],
    /// Its optimizer's state (every vector `spec.param_count` long).
    pub optimizer: &'a OptimizerState,
}

/// One part of a slice read back, laid out as the part model's buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPart {
    /// Parameters, in the part model's flat layout.
    pub params: Vec<f32>,
    /// Optimizer state for the part's optimizer.
    pub optimizer: OptimizerState,
}

/// What a sliced checkpoint's manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The whole network's name (`MnistPipeline`).
    pub network: String,
    /// How it is cut.
    pub layout: Layout,
    /// Completed optimizer steps.
    pub step: u64,
    /// Which save of the directory this is: its slice files carry it in
    /// their names ([`Layout::file_name`]).
    pub generation: u64,
    /// The optimizer's kind (`adam`).
    pub optimizer: String,
    /// FNV-1a of each slice file's bytes, in slice order.
    pub hashes: Vec<u64>,
}

impl Manifest {
    /// Refuses a checkpoint of another network or layout, naming the
    /// manifest.
    pub fn expect(&self, dir: &Path, network: &str, layout: Layout) -> Result<(), CheckpointError> {
        if self.network != network || self.layout != layout {
            return Err(CheckpointError::Mismatch {
                path: dir.join(MANIFEST),
                reason: format!(
                    "the checkpoint holds `{}` as {}, this run is `{network}` as {layout}",
                    self.network, self.layout
                ),
            });
        }
        Ok(())
    }

    /// File name of slice `index` of this save.
    pub fn file_name(&self, index: usize) -> String {
        self.layout.file_name(index, self.generation)
    }
}

/// Refuses to write over anything but a regular file (or nothing): a
/// sliced checkpoint's files are replaced by rename, which must not
/// replace a link, a device or a FIFO.
fn regular_or_new(path: &Path) -> Result<(), CheckpointError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(CheckpointError::Invalid(format!(
            "{} exists and is not a regular file; a sliced checkpoint writes only regular files",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Writes slice `index` of save `generation` of `network`'s checkpoint cut
/// as `layout` into `dir` atomically: every part's parameters and optimizer
/// state (all parts' optimizers of one kind, at one step, with the same
/// vectors). Returns the hash of the file's bytes, for the manifest.
pub fn write_slice(
    dir: &Path,
    network: &str,
    layout: Layout,
    generation: u64,
    index: usize,
    parts: &[Part<'_>],
) -> Result<u64, CheckpointError> {
    let invalid = |why: String| CheckpointError::Invalid(why);
    if index >= layout.slices() {
        return Err(invalid(format!("slice {index} of {layout}")));
    }
    let first = parts
        .first()
        .ok_or_else(|| invalid("a slice of no part".into()))?
        .optimizer;
    let slots: Vec<&str> = first.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let mut names: Vec<Vec<String>> = Vec::new();
    for part in parts {
        let o = part.optimizer;
        let these: Vec<&str> = o.tensors.iter().map(|(n, _)| n.as_str()).collect();
        if o.kind != first.kind || o.step != first.step || these != slots {
            return Err(invalid(format!(
                "the optimizers of one slice differ: `{}` at step {} ({these:?}) and `{}` at \
                 step {} ({slots:?})",
                o.kind, o.step, first.kind, first.step
            )));
        }
        crate::params::validate_layout(&part.spec.params, part.params.len())
            .map_err(|e| invalid(e.to_string()))?;
        if let Some((slot, v)) = o.tensors.iter().find(|(_, v)| v.len() != part.params.len()) {
            return Err(invalid(format!(
                "optimizer vector `{slot}` of `{}` has {} values for {} parameters",
                part.spec.name,
                v.len(),
                part.params.len()
            )));
        }
        let mut state_names = Vec::new();
        for p in part.spec.params.iter() {
            for s in &slots {
                state_names.push(state_name(s, &p.name));
            }
        }
        names.push(state_names);
    }
    let mut tensors = Vec::new();
    for (part, names) in parts.iter().zip(&names) {
        let mut names = names.iter();
        for p in part.spec.params.iter() {
            tensors.push(TensorRef {
                name: &p.name,
                shape: &p.shape,
                data: &part.params[p.range()],
            });
            for (_, v) in &part.optimizer.tensors {
                tensors.push(TensorRef {
                    name: names.next().expect("one name per slot and parameter"),
                    shape: &p.shape,
                    data: &v[p.range()],
                });
            }
        }
    }
    let md: BTreeMap<String, String> = [
        ("nnc.slice.format", SLICE_FORMAT.to_string()),
        ("nnc.slice.network", network.to_string()),
        ("nnc.slice.layout", layout.text()),
        ("nnc.slice.index", index.to_string()),
        ("nnc.slice.parts", parts_text(parts.iter().map(|p| p.spec))),
        ("nnc.step", first.step.to_string()),
        ("nnc.optimizer.kind", first.kind.clone()),
        ("nnc.optimizer.tensors", slots.join(",")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = encode(&tensors, &md)?;
    let path = dir.join(layout.file_name(index, generation));
    regular_or_new(&path)?;
    write_file_atomic(&path, &bytes)?;
    Ok(file_hash(&bytes))
}

/// The name of optimizer vector `slot`'s part for parameter `param`.
fn state_name(slot: &str, param: &str) -> String {
    format!("{}{slot}.{param}", super::OPTIM_PREFIX)
}

/// `Name:hash,…` of the part models.
fn parts_text<'a>(specs: impl Iterator<Item = &'a ModelSpec>) -> String {
    specs
        .map(|s| format!("{}:{:016x}", s.name, s.hash))
        .collect::<Vec<_>>()
        .join(",")
}

fn file_hash(bytes: &[u8]) -> u64 {
    nnc_spec::hash::fnv1a(bytes.iter().copied())
}

/// Writes the manifest into `dir` atomically: the last file of a save, the
/// moment the new generation replaces the previous one.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), CheckpointError> {
    if m.hashes.len() != m.layout.slices() {
        return Err(CheckpointError::Invalid(format!(
            "{} slice hashes for {}",
            m.hashes.len(),
            m.layout
        )));
    }
    let mut text = format!(
        "{MAGIC}\nnetwork = {}\nlayout = {}\nstep = {}\ngeneration = {}\noptimizer = {}\n",
        m.network,
        m.layout.text(),
        m.step,
        m.generation,
        m.optimizer
    );
    for (i, h) in m.hashes.iter().enumerate() {
        text.push_str(&format!("slice {} = {h:016x}\n", m.file_name(i)));
    }
    let path = dir.join(MANIFEST);
    regular_or_new(&path)?;
    write_file_atomic(&path, text.as_bytes())
}

/// Reads and checks the manifest of the sliced checkpoint in `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|error| CheckpointError::Io {
        path: path.clone(),
        error,
    })?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.clone(),
        reason,
    };
    let mut lines = text.lines();
    match lines.next() {
        Some(MAGIC) => {}
        Some("nnc sliced checkpoint 1") => {
            return Err(corrupt(
                "a sliced checkpoint of format 1 (one file per slice, rewritten in place), \
                 which this nnc no longer reads; move its manifest.txt aside (or choose a fresh \
                 directory) and save again"
                    .into(),
            ))
        }
        _ => return Err(corrupt(format!("the first line is not `{MAGIC}`"))),
    }
    let mut keys = BTreeMap::new();
    let mut slices = Vec::new();
    for (n, line) in lines.enumerate() {
        let (k, v) = line
            .split_once(" = ")
            .ok_or_else(|| corrupt(format!("line {} is not `key = value`", n + 2)))?;
        if let Some(file) = k.strip_prefix("slice ") {
            let h = u64::from_str_radix(v, 16)
                .map_err(|_| corrupt(format!("line {}: `{v}` is not a hash", n + 2)))?;
            slices.push((file.to_string(), h));
        } else if keys.insert(k.to_string(), v.to_string()).is_some() {
            return Err(corrupt(format!("line {}: `{k}` appears twice", n + 2)));
        }
    }
    let get = |k: &str| {
        keys.get(k)
            .cloned()
            .ok_or_else(|| corrupt(format!("`{k}` is missing")))
    };
    let layout = get("layout")?;
    let layout = Layout::parse(&layout).ok_or_else(|| corrupt(format!("layout `{layout}`")))?;
    let step = get("step")?;
    let step = step
        .parse()
        .map_err(|_| corrupt(format!("step `{step}` is not an integer")))?;
    let generation = get("generation")?;
    let generation = generation
        .parse()
        .map_err(|_| corrupt(format!("generation `{generation}` is not an integer")))?;
    let want: Vec<String> = (0..layout.slices())
        .map(|i| layout.file_name(i, generation))
        .collect();
    let have: Vec<&String> = slices.iter().map(|(f, _)| f).collect();
    if have != want.iter().collect::<Vec<_>>() {
        return Err(corrupt(format!(
            "it lists the slices {have:?}, {layout} has {want:?}"
        )));
    }
    Ok(Manifest {
        network: get("network")?,
        layout,
        step,
        generation,
        optimizer: get("optimizer")?,
        hashes: slices.into_iter().map(|(_, h)| h).collect(),
    })
}

/// A slice file read back whole: its tensors by name, checked against the
/// manifest (file hash, network, layout, index, step, optimizer).
struct Slice {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    /// `(name, hash)` of each part model, as written.
    parts: Vec<(String, String)>,
    slots: Vec<String>,
}

fn read_slice_file(dir: &Path, m: &Manifest, index: usize) -> Result<Slice, CheckpointError> {
    let path = dir.join(m.file_name(index));
    let bytes = std::fs::read(&path).map_err(|error| CheckpointError::Io {
        path: path.clone(),
        error,
    })?;
    let (got, want) = (file_hash(&bytes), m.hashes[index]);
    if got != want {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!(
                "its hash is {got:016x}, the manifest says {want:016x}: the slice was damaged, \
                 or is not from the save the manifest records (a save interrupted on some rank?)"
            ),
        });
    }
    let (tensors, md) = parse_tensors(&bytes, &path)?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.clone(),
        reason,
    };
    let get = |k: &str| {
        md.get(k)
            .map(String::as_str)
            .ok_or_else(|| corrupt(format!("metadata key `{k}` missing")))
    };
    if get("nnc.slice.format")? != SLICE_FORMAT {
        return Err(corrupt(format!(
            "unsupported slice format `{}`",
            get("nnc.slice.format")?
        )));
    }
    let expect = [
        ("nnc.slice.network", m.network.clone()),
        ("nnc.slice.layout", m.layout.text()),
        ("nnc.slice.index", index.to_string()),
        ("nnc.step", m.step.to_string()),
        ("nnc.optimizer.kind", m.optimizer.clone()),
    ];
    for (k, v) in expect {
        let have = get(k)?;
        if have != v {
            return Err(corrupt(format!(
                "metadata `{k}` is `{have}`, the manifest says `{v}`"
            )));
        }
    }
    let parts = get("nnc.slice.parts")?
        .split(',')
        .map(|p| {
            p.split_once(':')
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .ok_or_else(|| corrupt(format!("part `{p}` is not `name:hash`")))
        })
        .collect::<Result<_, _>>()?;
    let slots = get("nnc.optimizer.tensors")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Slice {
        tensors: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
        path,
        parts,
        slots,
    })
}

/// Reads slice `index` of the checkpoint in `dir` for the part models
/// `specs` (in the order they were written), checking everything before
/// returning: the file's hash against the manifest, its checksums and
/// finiteness, that it was written by these part models (names and
/// hashes), and every parameter and optimizer vector by name and shape.
/// Errors name the file.
pub fn read_slice(
    dir: &Path,
    m: &Manifest,
    index: usize,
    specs: &[&ModelSpec],
) -> Result<Vec<LoadedPart>, CheckpointError> {
    if index >= m.layout.slices() {
        return Err(CheckpointError::Invalid(format!(
            "slice {index} of {}",
            m.layout
        )));
    }
    let slice = read_slice_file(dir, m, index)?;
    let mismatch = |reason: String| CheckpointError::Mismatch {
        path: slice.path.clone(),
        reason,
    };
    let mine: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.name.to_string(), format!("{:016x}", s.hash)))
        .collect();
    if mine != slice.parts {
        let show = |v: &[(String, String)]| {
            v.iter()
                .map(|(n, h)| format!("`{n}` (hash {h})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(mismatch(format!(
            "written by {}, these models are {}",
            show(&slice.parts),
            show(&mine)
        )));
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut params = vec![0.0f32; spec.param_count];
        let mut state: Vec<(String, Vec<f32>)> = slice
            .slots
            .iter()
            .map(|s| (s.clone(), vec![0.0f32; spec.param_count]))
            .collect();
        for p in spec.params.iter() {
            let mut take = |name: String, into: &mut [f32]| -> Result<(), CheckpointError> {
                let t = slice
                    .tensors
                    .get(&name)
                    .ok_or_else(|| mismatch(format!("tensor `{name}` is missing")))?;
                if t.shape != *p.shape {
                    return Err(mismatch(format!(
                        "tensor `{name}` has shape {:?}, `{}` expects {:?}",
                        t.shape, spec.name, p.shape
                    )));
                }
                into[p.range()].copy_from_slice(&t.data);
                used.insert(name);
                Ok(())
            };
            take(p.name.to_string(), &mut params)?;
            for (slot, v) in &mut state {
                take(state_name(slot, &p.name), v)?;
            }
        }
        out.push(LoadedPart {
            params,
            optimizer: OptimizerState {
                kind: m.optimizer.clone(),
                step: m.step,
                tensors: state,
            },
        });
    }
    if let Some(extra) = slice.tensors.keys().find(|n| !used.contains(*n)) {
        return Err(mismatch(format!(
            "it has tensor `{extra}`, which none of its models has"
        )));
    }
    Ok(out)
}

/// Refuses optimizer state that `have`'s optimizer would not load (another
/// kind or other vectors), before anything is loaded, naming slice `s`'s
/// file.
pub(crate) fn check_optimizer(
    dir: &Path,
    m: &Manifest,
    s: usize,
    have: &OptimizerState,
    got: &OptimizerState,
) -> Result<(), CheckpointError> {
    let shape = |o: &OptimizerState| -> Vec<(String, usize)> {
        o.tensors
            .iter()
            .map(|(n, v)| (n.clone(), v.len()))
            .collect()
    };
    if have.kind != got.kind || shape(have) != shape(got) {
        return Err(CheckpointError::Mismatch {
            path: dir.join(m.file_name(s)),
            reason: format!(
                "optimizer `{}` with {:?}, this run's is `{}` with {:?}",
                got.kind,
                shape(got),
                have.kind,
                shape(have)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
