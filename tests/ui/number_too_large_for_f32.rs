// A literal beyond f32's range: one error at the literal (it once panicked
// in proc-macro2 on an infinite f32 literal, with a follow-on error).
nnc::network! {
    network Net {
        input x: f32[batch, 4];
        loss mean(x * 1e39);
    }
}

fn main() {}
