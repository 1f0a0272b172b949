//! `nnc explain` end to end (#26): a model is trained briefly with
//! `nnc train`, then one sample is explained — an image input becomes a
//! PNG heat map next to the input (decoded here, its size checked), a
//! tabular input a ranked table naming the CSV's features, a token input
//! (attributed through its embeddings) a ranked table of positions.
//!
//! Programs are built (`--debug`) in the cache `train_cli.rs` uses, under
//! the workspace's target directory.

mod support;
use support::cli::{nnc, ok, pairs, temp_dir, Lcg};

#[test]
fn a_tabular_sample_gets_a_ranked_table_of_named_features() {
    let dir = temp_dir("tabular");
    // The class is which of `a` and `b` is larger; `noise` is not used.
    pairs(&dir, 11, 30);
    ok(&nnc(&dir, &["train", "pairs.nn", "--debug", "--quiet"]));
    let out = ok(&nnc(
        &dir,
        &[
            "explain", "pairs.nn", "--debug", "--sample", "4", "--method", "ig",
        ],
    ));
    assert!(out.contains("predicted class big_"), "{out}");
    assert!(out.contains("completeness:"), "{out}");
    // The table: a header, then the features by name, most important
    // first; `noise` is last.
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("rank"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let name = |row: &str| row.split_whitespace().nth(1).unwrap().to_string();
    let mut names: Vec<String> = rows.iter().map(|r| name(r)).collect();
    assert_eq!(names.pop().as_deref(), Some("noise"), "{out}");
    names.sort();
    assert_eq!(names, ["a", "b"], "{out}");
    // Every method runs; a class by name.
    for method in ["saliency", "gradxinput", "smoothgrad"] {
        let out = ok(&nnc(
            &dir,
            &[
                "explain", "pairs.nn", "--debug", "--method", method, "--class", "big_b",
            ],
        ));
        assert!(out.contains("explaining class big_b"), "{out}");
    }
    // A sample past the end, a class that is not one.
    let o = nnc(&dir, &["explain", "pairs.nn", "--debug", "--sample", "300"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sample 300"));
    let o = nnc(
        &dir,
        &["explain", "pairs.nn", "--debug", "--class", "big_c"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("big_a, big_b"));
}

#[test]
fn an_image_sample_gets_a_heat_map_next_to_it() {
    let dir = temp_dir("image");
    // 8 × 8 images: a bright 3 × 3 blob in the top-left (class 0) or
    // bottom-right (class 1) corner on faint noise.
    let mut csv: String = (0..64).map(|i| format!("p{i},")).collect();
    csv.push_str("corner\n");
    let mut rng = Lcg(5);
    for k in 0..200 {
        let class = k % 2;
        for i in 0..64 {
            let (r, c) = (i / 8, i % 8);
            let blob = if class == 0 {
                r < 3 && c < 3
            } else {
                r >= 5 && c >= 5
            };
            let v = if blob { 1.0 } else { 0.2 * rng.next() };
            csv.push_str(&format!("{v},"));
        }
        csv.push_str(&format!("{class}\n"));
    }
    std::fs::write(dir.join("blobs.csv"), csv).unwrap();
    std::fs::write(
        dir.join("blobs.nn"),
        r#"network Blobs {
    input  image: f32[batch, 1, 8, 8];
    label  corner: class[batch] of 2;
    c = conv2d(image, 4, kernel: 3, padding: 1, activation: relu);
    logits = dense(flatten(c), 2);
    loss cross_entropy(logits, corner);
}
train Blobs {
    data: csv("blobs.csv", label: corner);
    validation: 0.1;
    optimizer: adam(lr: 1e-2);
    batch: 20;
    epochs: 10;
    seed: 1;
}
"#,
    )
    .unwrap();
    ok(&nnc(&dir, &["train", "blobs.nn", "--debug", "--quiet"]));
    let out = ok(&nnc(
        &dir,
        &[
            "explain", "blobs.nn", "--debug", "--sample", "3", "-o", "heat.png",
        ],
    ));
    assert!(out.contains("heat map of `image` (8x8"), "{out}");
    let file = std::fs::File::open(dir.join("heat.png")).expect("the PNG is written");
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("fits in memory")];
    let info = reader.next_frame(&mut pixels).expect("decodes");
    // Each 8 × 8 panel scaled by 28, side by side with an 8-pixel gap.
    assert_eq!((info.width, info.height), (2 * 224 + 8, 224));
    // The default name: NETWORK-SAMPLE-METHOD.png.
    ok(&nnc(
        &dir,
        &["explain", "blobs.nn", "--debug", "--method", "saliency"],
    ));
    assert!(dir.join("Blobs-0-saliency.png").is_file());
}

#[test]
fn a_token_sample_gets_a_ranked_table_of_positions() {
    let dir = temp_dir("tokens");
    // Sequences of 4 tokens in 0..6; the class is whether the token at
    // position 1 is 3 or more: the others are noise.
    let mut csv = String::from("t0,t1,t2,t3,high\n");
    let mut rng = Lcg(7);
    for _ in 0..400 {
        let t: Vec<u32> = (0..4).map(|_| ((rng.next() * 6.0) as u32).min(5)).collect();
        let high = if t[1] >= 3 { "yes" } else { "no" };
        csv.push_str(&format!("{},{},{},{},{high}\n", t[0], t[1], t[2], t[3]));
    }
    std::fs::write(dir.join("seq.csv"), csv).unwrap();
    std::fs::write(
        dir.join("seq.nn"),
        r#"network Seq {
    input  tokens: class[batch, 4] of 6;
    label  high: class[batch] of 2;
    output logits = dense(flatten(embedding(tokens, 8)), 2);
    loss cross_entropy(logits, high);
}
train Seq {
    data: csv("seq.csv", label: high);
    validation: 0.2;
    optimizer: adam(lr: 1e-2);
    batch: 16;
    epochs: 20;
    seed: 3;
}
"#,
    )
    .unwrap();
    ok(&nnc(&dir, &["train", "seq.nn", "--debug", "--quiet"]));
    for method in ["ig", "saliency", "gradxinput", "smoothgrad"] {
        let out = ok(&nnc(
            &dir,
            &[
                "explain", "seq.nn", "--debug", "--sample", "2", "--method", method,
            ],
        ));
        assert!(out.contains("through its embeddings"), "{out}");
        assert!(!out.contains(".png"), "no heat map of token ids: {out}");
        if method == "ig" {
            assert!(out.contains("completeness:"), "{out}");
        }
        // A header, then the four positions, the deciding one first.
        let rows: Vec<&str> = out.lines().skip_while(|l| !l.contains("rank")).collect();
        assert!(
            rows[0].contains("position") && rows[0].contains("token"),
            "{out}"
        );
        assert_eq!(rows.len(), 5, "{out}");
        let first = rows[1].split_whitespace().nth(1).unwrap();
        assert_eq!(first, "tokens[1]", "{method}: {out}");
    }
}
