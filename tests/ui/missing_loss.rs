// A network without `loss`: the error is on its name.
nnc::network! {
    network Net {
        input x: f32[batch, 4];
        output y = relu(x);
    }
}

fn main() {}
