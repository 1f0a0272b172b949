// Two `network!` calls in one module whose names differ only in case both
// define `NET_SPEC`: rustc's error points at the second `network NET`
// and notes the first.
nnc::network! {
    network Net {
        input x: f32[batch, 2];
        param w: f32[2];
        loss mean(x * w);
    }
}

nnc::network! {
    network NET {
        input x: f32[batch, 2];
        param w: f32[2];
        loss mean(x * w);
    }
}

fn main() {}
