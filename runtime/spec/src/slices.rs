//! How a network is cut into the slices of a sliced checkpoint (pipeline
//! stages, or split layers, issue #24): the [`Layout`], and the
//! [`Slicing`] that `nnc checkpoint merge|split` computes from a model
//! file — the whole network's parameter table and hash, and each slice's
//! part models — and hands the runtime's checkpoint tool as text (the
//! compiler does not link the runtime; the tool does not parse models).

use std::fmt::Write as _;

use crate::model::ParamSpec;

/// How a run's parameters are cut into slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Pipeline stages: slice `s` holds stage `s`'s parameters and
    /// optimizer state.
    Stages(usize),
    /// Split layers over this many ranks: slice `r` holds rank `r`'s shard
    /// and the replicated tail.
    Split(usize),
}

impl Layout {
    /// Number of slices (stages, or split ranks).
    pub fn slices(self) -> usize {
        match self {
            Layout::Stages(n) | Layout::Split(n) => n,
        }
    }

    /// File name of slice `index` of save `generation` inside a sliced
    /// checkpoint's directory (`stage-0.gen-3.safetensors`).
    pub fn file_name(self, index: usize, generation: u64) -> String {
        format!("{}-{index}.gen-{generation}.safetensors", self.prefix())
    }

    /// What a slice's file name starts with (`stage`, `shard`).
    pub fn prefix(self) -> &'static str {
        match self {
            Layout::Stages(_) => "stage",
            Layout::Split(_) => "shard",
        }
    }

    /// How manifests and slice metadata write the layout (`stages 2`).
    pub fn text(self) -> String {
        match self {
            Layout::Stages(n) => format!("stages {n}"),
            Layout::Split(n) => format!("split {n}"),
        }
    }

    /// The layout [`Layout::text`] wrote.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, n) = s.split_once(' ')?;
        let n: usize = n.parse().ok().filter(|&n| n > 0)?;
        match kind {
            "stages" => Some(Layout::Stages(n)),
            "split" => Some(Layout::Split(n)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Stages(n) => write!(f, "{n} pipeline stages"),
            Layout::Split(n) => write!(f, "split layers over {n} ranks"),
        }
    }
}

/// A network's name, model hash and parameter table (offsets in order,
/// contiguous): what a slice records of each model and what merging needs
/// of the whole network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The network's name (`MnistPipelineStage0`).
    pub name: String,
    /// Its model hash (`ModelSpec::hash`).
    pub hash: u64,
    /// Its parameters in declaration order.
    pub params: Vec<ParamSpec>,
}

/// A network cut into the slices of a [`Layout`]: the whole network and,
/// for each slice, its part models in the order a slice file holds them
/// (a stage; or a split rank's shard, then the tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slicing {
    /// How it is cut.
    pub layout: Layout,
    /// The whole network.
    pub whole: Table,
    /// Each slice's part models; `layout.slices()` of them.
    pub slices: Vec<Vec<Table>>,
}

/// First line of [`Slicing::to_text`].
const MAGIC: &str = "nnc slicing 1";

impl Slicing {
    /// One line per item: the layout, the whole network (`model NAME
    /// HASH`, then `param NAME DIM…` lines), and each slice (`slice I`,
    /// then its models).
    pub fn to_text(&self) -> String {
        let mut s = format!("{MAGIC}\nlayout {}\n", self.layout.text());
        let table = |s: &mut String, t: &Table| {
            let _ = writeln!(s, "model {} {:016x}", t.name, t.hash);
            for p in &t.params {
                s.push_str("param ");
                s.push_str(&p.name);
                for d in p.shape.iter() {
                    let _ = write!(s, " {d}");
                }
                s.push('\n');
            }
        };
        table(&mut s, &self.whole);
        for (i, parts) in self.slices.iter().enumerate() {
            let _ = writeln!(s, "slice {i}");
            for t in parts {
                table(&mut s, t);
            }
        }
        s
    }

    /// Reads what [`Slicing::to_text`] wrote; the error says which line is
    /// wrong and why.
    pub fn parse(text: &str) -> Result<Slicing, String> {
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(MAGIC) {
            return Err(format!("line 1: not `{MAGIC}`"));
        }
        let layout = match lines.next() {
            Some((_, l)) => l
                .strip_prefix("layout ")
                .and_then(Layout::parse)
                .ok_or_else(|| {
                    format!("line 2: `{l}` is not `layout stages N` or `layout split N`")
                })?,
            None => return Err("line 2: no layout".into()),
        };
        // Tables in order: the whole network's first, then each slice's.
        let mut whole: Option<Table> = None;
        let mut slices: Vec<Vec<Table>> = Vec::new();
        let mut current: Option<Table> = None;
        let finish = |t: Option<Table>, whole: &mut Option<Table>, slices: &mut Vec<Vec<Table>>| {
            if let Some(t) = t {
                match slices.last_mut() {
                    Some(s) => s.push(t),
                    None => *whole = Some(t),
                }
            }
        };
        for (n, line) in lines {
            let at = |why: String| format!("line {}: {why}", n + 1);
            let mut words = line.split(' ');
            match words.next() {
                Some("model") => {
                    finish(current.take(), &mut whole, &mut slices);
                    if whole.is_some() && slices.is_empty() {
                        return Err(at("a second model before any `slice`".into()));
                    }
                    let (Some(name), Some(hash), None) = (words.next(), words.next(), words.next())
                    else {
                        return Err(at(format!("`{line}` is not `model NAME HASH`")));
                    };
                    let hash = u64::from_str_radix(hash, 16)
                        .map_err(|_| at(format!("`{hash}` is not a hash")))?;
                    current = Some(Table {
                        name: name.to_string(),
                        hash,
                        params: Vec::new(),
                    });
                }
                Some("param") => {
                    let t = current
                        .as_mut()
                        .ok_or_else(|| at("a parameter outside any model".into()))?;
                    let name = words
                        .next()
                        .filter(|w| !w.is_empty())
                        .ok_or_else(|| at("a parameter without a name".into()))?;
                    let shape = words
                        .map(|d| {
                            d.parse::<usize>()
                                .map_err(|_| at(format!("dimension `{d}`")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let offset = t.params.last().map_or(0, |p| p.offset + p.len);
                    t.params.push(ParamSpec::new(name, shape, offset));
                }
                Some("slice") => {
                    finish(current.take(), &mut whole, &mut slices);
                    if whole.is_none() {
                        return Err(at("a slice before the whole network's model".into()));
                    }
                    let want = slices.len().to_string();
                    if words.next() != Some(want.as_str()) || words.next().is_some() {
                        return Err(at(format!("`{line}` is not `slice {want}`")));
                    }
                    slices.push(Vec::new());
                }
                _ => return Err(at(format!("`{line}` is not a model, a param or a slice"))),
            }
        }
        finish(current.take(), &mut whole, &mut slices);
        let whole = whole.ok_or("no model")?;
        if slices.len() != layout.slices() || slices.iter().any(Vec::is_empty) {
            return Err(format!(
                "{} slices (some without a model?) for {layout}",
                slices.len()
            ));
        }
        Ok(Slicing {
            layout,
            whole,
            slices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, hash: u64, params: &[(&str, &[usize])]) -> Table {
        let mut offset = 0;
        Table {
            name: name.into(),
            hash,
            params: params
                .iter()
                .map(|(n, s)| {
                    let p = ParamSpec::new(*n, s.to_vec(), offset);
                    offset += p.len;
                    p
                })
                .collect(),
        }
    }

    #[test]
    fn a_slicing_round_trips_through_text() {
        let shard = table("NetShard", 3, &[("a.weight", &[4, 3]), ("a.bias", &[3])]);
        let tail = table("NetTail", 4, &[("s", &[])]);
        let s = Slicing {
            layout: Layout::Split(2),
            whole: table(
                "Net",
                0xfeed,
                &[("a.weight", &[4, 6]), ("a.bias", &[6]), ("s", &[])],
            ),
            slices: vec![vec![shard.clone(), tail.clone()], vec![shard, tail]],
        };
        let text = s.to_text();
        assert!(text.contains("param a.weight 4 6\n"), "{text}");
        assert_eq!(Slicing::parse(&text).unwrap(), s);
        assert_eq!(s.whole.params[2].offset, 30);
    }

    #[test]
    fn a_damaged_slicing_names_the_line() {
        let s = Slicing {
            layout: Layout::Stages(1),
            whole: table("Net", 1, &[("w", &[2])]),
            slices: vec![vec![table("NetStage0", 2, &[("w", &[2])])]],
        };
        let text = s.to_text();
        let err =
            Slicing::parse(&text.replace("param w 2\nslice", "param w x\nslice")).unwrap_err();
        assert_eq!(err, "line 4: dimension `x`");
        let err = Slicing::parse(&text.replace("slice 0", "slice 1")).unwrap_err();
        assert!(err.starts_with("line 5: "), "{err}");
        let err = Slicing::parse(&text.replace("stages 1", "stages 2")).unwrap_err();
        assert!(err.contains("2 pipeline stages"), "{err}");
        assert!(Slicing::parse("hello").is_err());
    }
}
