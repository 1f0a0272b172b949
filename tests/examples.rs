//! End-to-end through the facade: every example model checks, differentiates
//! into a well-formed training graph, and the MNIST classifier has the size
//! and cost its architecture implies.

use nnc::compiler::autodiff::{training_graph, GradOptions};
use nnc::compiler::{check_source, report, SourceFile};
use std::path::Path;

fn models() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/models exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_model_checks_and_differentiates() {
    let files = models();
    assert!(!files.is_empty());
    for path in files {
        let src = SourceFile::new(
            path.display().to_string(),
            std::fs::read_to_string(&path).unwrap(),
        );
        let module =
            check_source(&src).unwrap_or_else(|e| panic!("{}", src.render(&e.diagnostics, false)));
        for net in &module.networks {
            let tg = training_graph(net, &GradOptions::default()).expect("differentiable");
            tg.graph.verify().expect("well-formed");
            assert_eq!(tg.params.len(), net.params.len());
            for (name, param, grad) in &tg.params {
                assert_eq!(
                    tg.graph.ty(*param),
                    tg.graph.ty(*grad),
                    "gradient of {name} has its parameter's type"
                );
            }
        }
    }
}

#[test]
fn mnist_mlp_has_the_size_and_cost_of_784_128_128_10() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mnist_mlp.nn");
    let src = SourceFile::new("mnist_mlp.nn", std::fs::read_to_string(path).unwrap());
    let module = check_source(&src).unwrap();
    let net = module.network("MnistMlp").unwrap();
    let layers = [(784, 128), (128, 128), (128, 10)];
    let params: usize = layers.iter().map(|(i, o)| i * o + o).sum();
    assert_eq!(net.param_count(), params);
    let tg = training_graph(net, &GradOptions::default()).unwrap();
    let (forward, backward) = report::flops_per_sample(&tg);
    // Matmuls 2·i·o each, bias adds o, relus 128 + 128, softmax 4·10 and
    // cross-entropy 5·10 per sample.
    let matmul: u64 = layers.iter().map(|(i, o)| 2 * i * o).sum::<usize>() as u64;
    let bias: u64 = layers.iter().map(|(_, o)| *o as u64).sum();
    assert_eq!(forward, matmul + bias + 256 + 40 + 50);
    // Backward costs about twice the forward pass (two matmuls per layer).
    assert!(backward > 2 * matmul - 2 * 784 * 128 && backward < 2 * forward + 2000);
    let cfg = module.train_config("MnistMlp");
    assert_eq!(cfg.spec.batch, nnc::compiler::lower::BatchSpec::Size(128));
    assert_eq!(cfg.spec.lr, 1e-3);
}
