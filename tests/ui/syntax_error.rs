// A missing `;`: the error points at the token it belongs after.
nnc::network! {
    network Net {
        input x: f32[batch, 4]
        loss mean(x);
    }
}

fn main() {
    let _ = Net::new(8);
}
