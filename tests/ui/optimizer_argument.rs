// `adam` has no parameter `learning_rate`; it is `lr`.
nnc::network! {
    network Net {
        input x: f32[batch, 4];
        param w: f32[4, 1];
        loss mean(x @ w);
    }

    train Net {
        optimizer: adam(learning_rate: 1e-3);
    }
}

fn main() {}
