// Mismatched inner dimensions: the whole product is underlined.
nnc::network! {
    network Net {
        input x: f32[batch, 784];
        param w: f32[128, 10];
        h = x @ w;
        loss mean(h);
    }
}

fn main() {}
