//! Every class of compile error: its kind, the exact `line:col` it points at,
//! the exact message, and (where one is given) the label and the hint. Also
//! the rendered form, and that one mistake gives one error while independent
//! mistakes are all reported.

use nnc_compiler::{check_source, Diagnostic, ErrorKind, SourceFile};

/// The errors of a source that must fail.
fn errors(text: &str) -> (SourceFile, Vec<Diagnostic>) {
    let source = SourceFile::new("test.nn", text);
    match check_source(&source) {
        Ok(_) => panic!("expected errors, but this compiled:\n{text}"),
        Err(e) => (source, e.diagnostics),
    }
}

/// The one error of a source, checked for kind, position and message.
#[track_caller]
fn one(text: &str, kind: ErrorKind, line_col: (usize, usize), message: &str) -> Diagnostic {
    let (source, diags) = errors(text);
    assert_eq!(
        diags.len(),
        1,
        "expected exactly one error, got:\n{}",
        source.render(&diags, false)
    );
    let d = diags.into_iter().next().expect("one diagnostic");
    assert_eq!(d.message, message);
    assert_eq!(d.kind, kind, "kind of `{message}`");
    assert_eq!(
        source.line_col(d.span.start),
        line_col,
        "position of `{message}`"
    );
    d
}

/// `(line, col)` of every note of a diagnostic, with its text.
fn notes(text: &str, d: &Diagnostic) -> Vec<((usize, usize), String)> {
    let source = SourceFile::new("test.nn", text);
    d.notes
        .iter()
        .map(|(sp, t)| (source.line_col(sp.start), t.clone()))
        .collect()
}

/// The text a diagnostic's primary span covers.
fn spanned<'a>(text: &'a str, d: &Diagnostic) -> &'a str {
    &text[d.span.start..d.span.end]
}

/// A source that must compile.
fn compiles(text: &str) {
    let source = SourceFile::new("ok.nn", text);
    if let Err(e) = check_source(&source) {
        panic!("{}", source.render(&e.diagnostics, false));
    }
}

// ------------------------------------------------------------------ syntax

#[test]
fn missing_semicolon_points_just_after_the_previous_token() {
    let text = "network N {
    input x: f32[batch, 4]
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (2, 27),
        "expected `;`, found `loss`",
    );
    assert_eq!(d.label, "expected `;`");
    assert_eq!(d.span.start, d.span.end, "an insertion point");
}

#[test]
fn missing_semicolon_on_the_same_line_points_at_the_next_token() {
    let text = "network N {
    input x: f32[batch, 4] loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (2, 28),
        "expected `;`, found `loss`",
    );
    assert_eq!(spanned(text, &d), "loss");
}

#[test]
fn bad_token_in_an_expression() {
    let text = "network N {
    input x: f32[batch, 4];
    y = x $ 2;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (3, 11),
        "expected `(`, `;` or an operator, found `$`",
    );
    assert_eq!(spanned(text, &d), "$");
    assert_eq!(d.label, "expected `(`, `;` or an operator");
}

#[test]
fn missing_name_in_a_declaration() {
    let text = "network N {
    input : f32[batch, 4];
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (2, 11),
        "expected a name, found `:`",
    );
    assert_eq!(d.label, "expected a name");
}

#[test]
fn missing_network_name() {
    one(
        "network { }",
        ErrorKind::Syntax,
        (1, 9),
        "expected a name, found `{`",
    );
}

#[test]
fn unclosed_parenthesis() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu((x);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::Syntax,
        (3, 17),
        "expected `)`, `,` or an operator, found `;`",
    );
}

#[test]
fn extra_closing_parenthesis() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu(x));
    loss mean(y);
}";
    one(
        text,
        ErrorKind::Syntax,
        (3, 16),
        "expected `;` or an operator, found `)`",
    );
}

#[test]
fn unclosed_network_block_points_after_the_last_token() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
";
    one(
        text,
        ErrorKind::Syntax,
        (3, 18),
        "expected `input`, `label`, `loss`, `output`, `param`, `}` or a name, found end of input",
    );
}

#[test]
fn unclosed_type_bracket() {
    let text = "network N {
    input x: f32[batch, 4;
    loss mean(x);
}";
    one(
        text,
        ErrorKind::Syntax,
        (2, 26),
        "expected `,` or `]`, found `;`",
    );
}

#[test]
fn deep_nesting_is_rejected_before_parsing() {
    let deep = format!("{}x{}", "(".repeat(200), ")".repeat(200));
    let text = format!(
        "network N {{
    input x: f32[batch, 4];
    y = {deep};
    loss mean(y);
}}"
    );
    // The network's `{` is depth 1, so the 128th `(` (column 9 + 127) is too deep.
    let d = one(
        &text,
        ErrorKind::Syntax,
        (3, 136),
        "brackets nested more than 128 deep",
    );
    assert_eq!(d.label, "too deep");
    assert_eq!(spanned(&text, &d), "(");
}

#[test]
fn nesting_up_to_the_limit_parses_and_comments_do_not_count() {
    // 1 (`{`) + 127 = 128 levels: allowed.
    let deep = format!("{}x{}", "(".repeat(127), ")".repeat(127));
    compiles(&format!(
        "network N {{
    // (((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((
    input x: f32[batch, 4];
    y = {deep};
    loss mean(y);
}}"
    ));
}

#[test]
fn keyword_used_as_a_name() {
    let text = "network N {
    input loss: f32[batch, 4];
    loss mean(loss);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (2, 11),
        "expected a name, found the keyword `loss`",
    );
    assert_eq!(spanned(text, &d), "loss");
    assert_eq!(d.label, "a keyword cannot be used as a name");
    assert_eq!(
        d.help.as_deref(),
        Some(
            "rename it; the keywords are `network`, `train`, `input`, `label`, `param`, \
             `output`, `loss`, `class`, `of`"
        )
    );
}

#[test]
fn keyword_used_as_a_value() {
    let text = "network N {
    input x: f32[batch, 4];
    y = x + loss;
    loss mean(y);
}";
    one(
        text,
        ErrorKind::Syntax,
        (3, 13),
        "expected a name, found the keyword `loss`",
    );
}

#[test]
fn names_may_start_with_keywords_and_shadow_functions() {
    compiles(
        "network inputs {
    input input_: f32[batch, 4];
    label labels: class[batch] of 4;
    relu = input_ * 2;
    of1 = relu(relu);
    output output2 = of1;
    loss_value = cross_entropy(of1, labels);
    loss loss_value;
}
train inputs { epochs: 1; }",
    );
}

#[test]
fn keyword_after_an_unclosed_block_is_not_called_a_name() {
    // The `}` of the network is missing: `train` starts the next block.
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);

train N {
    epochs: 2;
}";
    one(
        text,
        ErrorKind::Syntax,
        (5, 1),
        "expected `input`, `label`, `loss`, `output`, `param`, `}` or a name, found `train`",
    );
}

#[test]
fn stray_character_on_its_own_line_is_pointed_at() {
    let text = "network N {
    input x: f32[batch, 4];
    é = relu(x);
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (3, 5),
        "expected `input`, `label`, `loss`, `output`, `param`, `}` or a name, found `é`",
    );
    assert_eq!(spanned(text, &d), "é");
}

#[test]
fn unknown_element_type() {
    let text = "network N {
    input x: f64[batch, 4];
    loss mean(x);
}";
    one(
        text,
        ErrorKind::Syntax,
        (2, 14),
        "expected `class` or a type like `f32[batch, 784]`, found `f64`",
    );
}

#[test]
fn text_after_the_last_block() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
} garbage";
    one(
        text,
        ErrorKind::Syntax,
        (4, 3),
        "expected `network`, `train` or end of input, found `garbage`",
    );
}

#[test]
fn integer_and_number_too_large() {
    let text = "network N {
    input x: f32[batch, 99999999999999999999999];
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (2, 25),
        "integer `99999999999999999999999` is too large",
    );
    assert_eq!(spanned(text, &d), "99999999999999999999999");
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x) * 1e999;
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (3, 20),
        "number `1e999` is too large",
    );
    assert_eq!(d.label, "not a finite f64");
}

#[test]
fn pipe_into_something_that_is_not_a_function() {
    let text = "network N {
    input x: f32[batch, 4];
    y = x |> 3;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::Syntax,
        (3, 14),
        "the right side of `|>` must be a function name or call, found the integer 3",
    );
    assert_eq!(d.label, "not a function");
}

#[test]
fn a_syntax_error_in_a_train_block() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
}
train N {
    epochs 3;
}";
    one(text, ErrorKind::Syntax, (6, 12), "expected `:`, found `3`");
}

// ------------------------------------------------------------ unknown names

#[test]
fn unknown_name_with_did_you_mean() {
    let text = "network N {
    input image: f32[batch, 4];
    y = relu(imgae);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::UnknownName,
        (3, 14),
        "unknown name `imgae`",
    );
    assert_eq!(spanned(text, &d), "imgae");
    assert_eq!(d.label, "not defined before this use");
    assert_eq!(d.help.as_deref(), Some("did you mean `image`?"));
}

#[test]
fn unknown_name_far_from_everything_has_no_hint() {
    let text = "network N {
    input image: f32[batch, 4];
    y = relu(zzz);
    loss mean(y);
}";
    let d = one(text, ErrorKind::UnknownName, (3, 14), "unknown name `zzz`");
    assert_eq!(d.help, None);
}

#[test]
fn a_name_used_before_its_definition_is_unknown() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu(h);
    h = tanh(x);
    loss mean(y);
}";
    one(text, ErrorKind::UnknownName, (3, 14), "unknown name `h`");
}

#[test]
fn unknown_function_with_did_you_mean() {
    let text = "network N {
    input x: f32[batch, 4];
    y = rlu(x);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::UnknownName,
        (3, 9),
        "unknown function `rlu`",
    );
    assert_eq!(d.label, "no such function");
    assert_eq!(d.help.as_deref(), Some("did you mean `relu`?"));
}

#[test]
fn function_used_as_a_value() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu + x;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::UnknownName,
        (3, 9),
        "`relu` is a function, not a value",
    );
    assert_eq!(d.label, "a function used as a value");
    assert_eq!(
        d.help.as_deref(),
        Some("call it, `relu(x)`, or pipe into it, `x |> relu`")
    );
}

#[test]
fn unknown_dimension_name() {
    let text = "network N {
    input x: f32[batch, features];
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::UnknownName,
        (2, 25),
        "unknown dimension `features`; expected an integer or `batch`",
    );
    assert_eq!(spanned(text, &d), "features");
}

#[test]
fn train_naming_an_unknown_network() {
    let text = "network MnistMlp {
    input x: f32[batch, 4];
    loss mean(x);
}
train MnistMLP {
    epochs: 2;
}";
    let d = one(
        text,
        ErrorKind::UnknownName,
        (5, 7),
        "`train MnistMLP` names no network in this file",
    );
    assert_eq!(d.label, "unknown network");
    assert_eq!(d.help.as_deref(), Some("did you mean `MnistMlp`?"));
}

#[test]
fn unknown_train_setting() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
}
train N {
    epoch: 2;
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (6, 5),
        "unknown setting `epoch`; expected one of: optimizer, batch, epochs, schedule, l1, l2, \
         weight_decay, seed",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `epochs`?"));
}

// ---------------------------------------------------------- duplicate names

#[test]
fn duplicate_binding() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu(x);
    y = tanh(x);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (4, 5),
        "`y` is already defined",
    );
    assert_eq!(d.label, "defined again here");
    assert_eq!(
        notes(text, &d),
        vec![((3, 5), "first defined here".to_string())]
    );
}

#[test]
fn duplicate_param() {
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[4, 4];
    param w: f32[4, 2];
    loss mean(x @ w);
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (4, 11),
        "`w` is already defined",
    );
    assert_eq!(
        notes(text, &d),
        vec![((3, 11), "first defined here".to_string())]
    );
}

#[test]
fn input_and_label_share_one_scope() {
    let text = "network N {
    input x: f32[batch, 4];
    label x: class[batch] of 4;
    loss mean(x);
}";
    one(
        text,
        ErrorKind::DuplicateName,
        (3, 11),
        "`x` is already defined",
    );
}

#[test]
fn duplicate_output() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu(x);
    output y;
    output y;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (5, 12),
        "output `y` is declared twice",
    );
    assert_eq!(d.label, "declared again here");
    assert_eq!(
        notes(text, &d),
        vec![((4, 5), "first declared here".to_string())]
    );
}

#[test]
fn duplicate_output_with_values_is_one_error() {
    let text = "network N {
    input x: f32[batch, 4];
    output p = softmax(x);
    output p = relu(x);
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (4, 12),
        "`p` is already defined",
    );
    assert_eq!(
        notes(text, &d),
        vec![((3, 12), "first defined here".to_string())]
    );
}

#[test]
fn duplicate_network() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
}
network N {
    input x: f32[batch, 4];
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (5, 9),
        "network `N` is defined twice",
    );
    assert_eq!(
        notes(text, &d),
        vec![((1, 9), "first defined here".to_string())]
    );
}

#[test]
fn duplicate_train_setting() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
}
train N {
    epochs: 3;
    epochs: 4;
}";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (7, 5),
        "setting `epochs` is given twice",
    );
    assert_eq!(
        notes(text, &d),
        vec![((6, 5), "first given here".to_string())]
    );
}

#[test]
fn two_train_blocks_for_one_network() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
}
train N { epochs: 1; }
train N { epochs: 2; }";
    let d = one(
        text,
        ErrorKind::DuplicateName,
        (6, 7),
        "network `N` has two `train` blocks",
    );
    assert_eq!(notes(text, &d), vec![((5, 1), "first block".to_string())]);
}

#[test]
fn two_losses() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(x);
    loss sum(x);
}";
    let d = one(
        text,
        ErrorKind::Invalid,
        (4, 5),
        "a network has exactly one `loss`; this is a second one",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("add the terms into one loss: `loss a + b;`")
    );
}

// ----------------------------------------------------------------- shapes

#[test]
fn matmul_inner_dimensions() {
    let text = "network N {
    input image: f32[batch, 784];
    param w: f32[128, 10];
    y = image @ w;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 9),
        "matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 and 128 differ",
    );
    assert_eq!(spanned(text, &d), "image @ w");
    assert_eq!(
        notes(text, &d),
        vec![
            ((4, 9), "this is f32[batch, 784]".to_string()),
            ((4, 17), "this is f32[128, 10]".to_string()),
        ]
    );
}

#[test]
fn matmul_of_a_vector() {
    let text = "network N {
    input x: f32[batch, 4];
    param v: f32[4];
    loss mean(x @ v);
}";
    one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 15),
        "matmul of f32[batch, 4] and f32[4]: the right operand must have rank 2 or more, \
         found rank 1",
    );
}

#[test]
fn dense_layers_that_do_not_chain() {
    // The layer sugar reports the matmul it expands to at the layer call.
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[8, 2];
    h = dense(x, 3);
    loss mean(h @ w);
}";
    one(
        text,
        ErrorKind::ShapeMismatch,
        (5, 15),
        "matmul of f32[batch, 3] and f32[8, 2]: inner dimensions 3 and 8 differ",
    );
}

#[test]
fn broadcasting_fixed_dimensions() {
    let text = "network N {
    input x: f32[batch, 4];
    param b: f32[3];
    y = x + b;
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 9),
        "cannot broadcast f32[batch, 4] + f32[3]: dimension -1 is 4 on the left and 3 on the right",
    );
    assert_eq!(spanned(text, &d), "x + b");
}

#[test]
fn broadcasting_batch_matches_only_batch_or_one() {
    let text = "network N {
    input x: f32[batch, 4];
    param b: f32[8, 4];
    y = x * b;
    loss mean(y);
}";
    one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 9),
        "cannot broadcast f32[batch, 4] * f32[8, 4]: dimension -2 is batch on the left and 8 on the right",
    );
    // The numpy cases that do broadcast.
    compiles(
        "network N {
    input x: f32[batch, 4];
    input s: f32[batch, 1];
    param b: f32[4];
    param c: f32[1, 4];
    y = (x + b) * s - c / 2;
    loss mean(y);
}",
    );
}

#[test]
fn loss_must_be_a_scalar() {
    let text = "network N {
    input x: f32[batch, 4];
    loss relu(x);
}";
    let d = one(
        text,
        ErrorKind::ShapeMismatch,
        (3, 10),
        "the loss must be a scalar, found f32[batch, 4]",
    );
    assert_eq!(d.label, "this is f32[batch, 4]");
    assert_eq!(
        d.help.as_deref(),
        Some("reduce it, for example with mean(...)")
    );
}

#[test]
fn mse_shapes_differ() {
    let text = "network N {
    input x: f32[batch, 4];
    input t: f32[batch, 1];
    loss mse(x, t);
}";
    let d = one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 10),
        "mse of f32[batch, 4] and f32[batch, 1]: shapes differ",
    );
    assert_eq!(
        notes(text, &d),
        vec![
            ((4, 14), "this is f32[batch, 4]".to_string()),
            ((4, 17), "this is f32[batch, 1]".to_string()),
        ]
    );
}

#[test]
fn l1_shapes_differ_even_when_they_would_broadcast() {
    let text = "network N {
    input x: f32[batch, 1];
    input t: f32[batch];
    loss x |> l1(t);
}";
    one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 10),
        "l1 of f32[batch, 1] and f32[batch]: shapes differ",
    );
}

#[test]
fn cross_entropy_logits_shape() {
    let text = "network N {
    input x: f32[batch, 4];
    label y: class[batch] of 10;
    loss cross_entropy(x, y);
}";
    let d = one(
        text,
        ErrorKind::ShapeMismatch,
        (4, 10),
        "cross_entropy of f32[batch, 4] against class[batch] of 10: logits must be \
         f32[batch, 10] (one score per class for each label)",
    );
    assert_eq!(spanned(text, &d), "cross_entropy(x, y)");
}

#[test]
fn cross_entropy_needs_class_labels() {
    let text = "network N {
    input x: f32[batch, 10];
    input t: f32[batch, 10];
    loss cross_entropy(x, t);
}";
    let d = one(
        text,
        ErrorKind::TypeMismatch,
        (4, 27),
        "cross_entropy expects class labels as its second operand, found f32[batch, 10]",
    );
    assert_eq!(spanned(text, &d), "t");
}

#[test]
fn shapes_too_large_are_errors_not_overflows() {
    let text = "network N {
    input x: f32[1099511627776, 1];
    param w: f32[1, 1099511627776];
    loss mean(x @ w);
}";
    one(
        text,
        ErrorKind::Invalid,
        (4, 15),
        "the result f32[1099511627776, 1099511627776] has too many elements",
    );
    let text = "network N {
    input x: f32[batch, 1099511627776];
    y = dense(x, 1073741824);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::Invalid,
        (3, 9),
        "parameter `y.weight` has too many elements: f32[1099511627776, 1073741824]",
    );
    let text = "network N {
    input x: f32[batch, 4];
    y = reshape(x, [batch, 100000000000000000000000]);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::Invalid,
        (3, 28),
        "a dimension of `reshape`'s shape is too large",
    );
}

// ------------------------------------------------------------- arguments

#[test]
fn unknown_named_argument() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 8, activaton: relu);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 21),
        "`dense` has no parameter `activaton`; expected one of: x, units, activation, init, bias",
    );
    assert_eq!(spanned(text, &d), "activaton");
    assert_eq!(d.help.as_deref(), Some("did you mean `activation`?"));
}

#[test]
fn too_many_positional_arguments() {
    let text = "network N {
    input x: f32[batch, 4];
    y = relu(x, 2);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 17),
        "`relu` takes at most 1 positional argument",
    );
    assert_eq!(d.label, "unexpected argument");
}

#[test]
fn too_many_positional_arguments_through_a_pipe() {
    // `x |> softmax(1, 2)` is softmax(x, 1, 2): the 2 is the third.
    let text = "network N {
    input x: f32[batch, 4];
    y = x |> softmax(1, 2);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 25),
        "`softmax` takes at most 2 positional arguments",
    );
}

#[test]
fn missing_required_argument() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 9),
        "`dense` is missing its argument `units` (an integer)",
    );
    assert_eq!(d.label, "`units` missing");
}

#[test]
fn argument_of_the_wrong_kind() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 1.5);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 18),
        "argument `units` of `dense` must be an integer, found the number 1.5",
    );
    assert_eq!(d.label, "expected an integer");
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 4, bias: 0);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 27),
        "argument `bias` of `dense` must be true or false, found the integer 0",
    );
}

#[test]
fn invalid_dense_width() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 0);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 18),
        "`units` of `dense` must be a positive integer, found 0",
    );
}

#[test]
fn positional_after_named_and_given_twice() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, units: 4, relu);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 28),
        "positional argument after named arguments in `dense`",
    );
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 4, units: 8);
    loss mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 28),
        "argument `units` of `dense` is given twice",
    );
}

#[test]
fn unknown_activation() {
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 8, activation: rleu);
    loss mean(y);
}";
    // Shape-preserving functions of one tensor only: `sum` or `flatten`
    // would silently change what the layer computes.
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 33),
        "unknown activation `rleu`; expected `linear` or one of: relu, sigmoid, tanh, gelu, \
         exp, log, sqrt, abs, neg, leaky_relu, softmax, log_softmax",
    );
    assert_eq!(d.label, "unknown activation");
    assert_eq!(d.help.as_deref(), Some("did you mean `relu`?"));
}

#[test]
fn unknown_initializer() {
    let names = "zeros, ones, constant, normal, uniform, glorot_uniform, glorot_normal, \
                 xavier_uniform, xavier_normal, he_uniform, he_normal, kaiming_uniform, \
                 kaiming_normal";
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[4, 4] = he_norml;
    loss mean(x @ w);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 26),
        &format!("unknown initializer `he_norml`; expected one of: {names}"),
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `he_normal`?"));
    let text = "network N {
    input x: f32[batch, 4];
    y = dense(x, 4, init: glorot);
    loss mean(y);
}";
    let d = one(
        text,
        ErrorKind::BadArgument,
        (3, 27),
        &format!("unknown initializer `glorot`; expected one of: {names}"),
    );
    assert_eq!(d.help, None);
}

#[test]
fn invalid_initializer_arguments() {
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[4, 4] = normal(std: 0);
    loss mean(x @ w);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 26),
        "normal: `std` must be positive",
    );
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[4, 4] = uniform(low: 1, high: -1);
    loss mean(x @ w);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 26),
        "uniform: `low` must be below `high`",
    );
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[4, 4] = constant;
    loss mean(x @ w);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 26),
        "`constant` is missing its argument `value` (a number)",
    );
}

fn with_train(settings: &str) -> String {
    format!(
        "network N {{
    input x: f32[batch, 4];
    loss mean(x);
}}
train N {{
{settings}
}}"
    )
}

#[test]
fn unknown_optimizer() {
    let d = one(
        &with_train("    optimizer: adma(lr: 1e-3);"),
        ErrorKind::BadArgument,
        (6, 16),
        "unknown optimizer `adma`; expected one of: sgd, momentum, adam, adamw, rmsprop, adagrad",
    );
    assert_eq!(d.label, "unknown optimizer");
    assert_eq!(d.help.as_deref(), Some("did you mean `adam`?"));
}

#[test]
fn unknown_optimizer_argument() {
    let text = with_train("    optimizer: adam(learning_rate: 1e-3);");
    let d = one(
        &text,
        ErrorKind::BadArgument,
        (6, 21),
        "`adam` has no parameter `learning_rate`; expected one of: lr, beta1, beta2, eps",
    );
    assert_eq!(spanned(&text, &d), "learning_rate");
    assert_eq!(d.help.as_deref(), Some("did you mean `lr`?"));
}

#[test]
fn optimizer_argument_out_of_range() {
    one(
        &with_train("    optimizer: adam(beta1: 1.0);"),
        ErrorKind::BadArgument,
        (6, 28),
        "`beta1` of `adam` must be a number in [0, 1), found the number 1",
    );
    one(
        &with_train("    optimizer: sgd(lr: 0);"),
        ErrorKind::BadArgument,
        (6, 24),
        "`lr` of `sgd` must be a positive number, found the integer 0",
    );
    one(
        &with_train("    optimizer: 0.1;"),
        ErrorKind::BadArgument,
        (6, 16),
        "`optimizer` must be an optimizer such as `adam(lr: 1e-3)`, found the number 0.1",
    );
}

#[test]
fn nesterov_without_momentum() {
    let d = one(
        &with_train("    optimizer: sgd(lr: 0.1, nesterov: true);"),
        ErrorKind::BadArgument,
        (6, 16),
        "Nesterov momentum needs a positive `momentum` and zero `dampening`",
    );
    assert_eq!(d.label, "invalid combination");
    // With momentum it is fine.
    compiles(&with_train(
        "    optimizer: sgd(lr: 0.1, momentum: 0.9, nesterov: true);",
    ));
}

#[test]
fn bad_schedules() {
    one(
        &with_train("    schedule: cosine(warmup: -5);"),
        ErrorKind::BadArgument,
        (6, 30),
        "`warmup` of `cosine` must be a whole number of steps, found the number -5",
    );
    let d = one(
        &with_train("    schedule: linear;"),
        ErrorKind::BadArgument,
        (6, 15),
        "unknown schedule `linear`; expected one of: constant, step, exponential, cosine",
    );
    assert_eq!(d.label, "unknown schedule");
    one(
        &with_train("    schedule: step(gamma: 0.5);"),
        ErrorKind::BadArgument,
        (6, 15),
        "`step` is missing its argument `every`",
    );
    one(
        &with_train("    schedule: exponential(gamma: 2);"),
        ErrorKind::BadArgument,
        (6, 34),
        "`gamma` of `exponential` must be a number in (0, 1], found the integer 2",
    );
}

#[test]
fn bad_batch_epochs_seed() {
    one(
        &with_train("    batch: 0;"),
        ErrorKind::BadArgument,
        (6, 12),
        "`batch` must be a positive integer or `full`, found the integer 0",
    );
    one(
        &with_train("    batch: all;"),
        ErrorKind::BadArgument,
        (6, 12),
        "`batch` must be a positive integer or `full`, found the name `all`",
    );
    one(
        &with_train("    epochs: 2.5;"),
        ErrorKind::BadArgument,
        (6, 13),
        "`epochs` must be a positive integer, found the number 2.5",
    );
    one(
        &with_train("    seed: -1;"),
        ErrorKind::BadArgument,
        (6, 11),
        "`seed` must be a non-negative integer, found the number -1",
    );
    one(
        &with_train("    l2: -0.1;"),
        ErrorKind::BadArgument,
        (6, 9),
        "`l2` must be a number ≥ 0, found the number -0.1",
    );
}

// ------------------------------------------------------------ missing loss

#[test]
fn missing_loss() {
    let text = "network N {
    input x: f32[batch, 4];
    output y = relu(x);
}";
    let d = one(
        text,
        ErrorKind::MissingLoss,
        (1, 9),
        "network `N` has no `loss`",
    );
    assert_eq!(d.label, "no loss declared in this network");
    assert_eq!(
        d.help.as_deref(),
        Some("declare what training minimises, e.g. `loss cross_entropy(logits, labels);`")
    );
}

#[test]
fn a_failed_loss_is_not_also_a_missing_loss() {
    let text = "network N {
    input x: f32[batch, 4];
    loss mean(q);
}";
    one(text, ErrorKind::UnknownName, (3, 15), "unknown name `q`");
}

// -------------------------------------------------------- labels as floats

const LABELS: &str = "network N {
    input x: f32[batch, 10];
    label digit: class[batch] of 10;
";

#[test]
fn label_in_arithmetic() {
    let text = format!("{LABELS}    y = digit + 1;\n    loss mean(x);\n}}");
    let d = one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 9),
        "`+` expects an f32 tensor, found class labels class[batch] of 10",
    );
    assert_eq!(spanned(&text, &d), "digit");
    assert_eq!(d.label, "this is class[batch] of 10");
    assert_eq!(
        d.help.as_deref(),
        Some(
            "labels are class indices; use them in cross_entropy(logits, labels) \
             or turn them into floats with one_hot(labels)"
        )
    );
}

#[test]
fn label_negated() {
    let text = format!("{LABELS}    y = -digit;\n    loss mean(x);\n}}");
    let d = one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 10),
        "unary `-` expects an f32 tensor, found class labels class[batch] of 10",
    );
    assert_eq!(spanned(&text, &d), "digit");
}

#[test]
fn label_in_mse_names_mse() {
    let text = format!("{LABELS}    loss mse(digit, x);\n}}");
    let d = one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 14),
        "mse expects an f32 tensor, found class labels class[batch] of 10",
    );
    assert_eq!(spanned(&text, &d), "digit");
    let text = format!("{LABELS}    loss l1(x, digit);\n}}");
    let d = one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 16),
        "l1 expects an f32 tensor, found class labels class[batch] of 10",
    );
    assert_eq!(spanned(&text, &d), "digit");
}

#[test]
fn label_into_a_layer() {
    let text = format!("{LABELS}    y = dense(digit, 10);\n    loss mean(x);\n}}");
    one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 15),
        "dense expects an f32 input whose last dimension is a fixed number of features, \
         found class[batch] of 10",
    );
    let text = format!("{LABELS}    y = digit |> relu;\n    loss mean(x);\n}}");
    one(
        &text,
        ErrorKind::TypeMismatch,
        (4, 9),
        "relu expects an f32 tensor, found class labels class[batch] of 10",
    );
}

#[test]
fn one_hot_makes_labels_floats() {
    compiles(&format!("{LABELS}    loss mse(one_hot(digit), x);\n}}"));
}

// ------------------------------------------------------ invalid declarations

#[test]
fn param_shape_with_batch() {
    let text = "network N {
    input x: f32[batch, 4];
    param w: f32[batch, 4];
    loss mean(x);
}";
    let d = one(
        text,
        ErrorKind::Invalid,
        (3, 18),
        "a parameter's shape cannot depend on the batch size",
    );
    assert_eq!(d.label, "`batch` not allowed here");
}

#[test]
fn zero_sizes() {
    let text = "network N {
    input x: f32[batch, 0];
    loss mean(x);
}";
    one(
        text,
        ErrorKind::Invalid,
        (2, 25),
        "a dimension must be at least 1",
    );
    let text = "network N {
    label y: class[batch] of 0;
    loss 0;
}";
    one(
        text,
        ErrorKind::Invalid,
        (2, 30),
        "the class count must be between 1 and 16777216",
    );
}

// ------------------------------------------------------------- rendering

#[test]
fn rendered_error_has_location_source_line_and_underline() {
    let text = "network N {
    input image: f32[batch, 784];
    param w: f32[128, 10];
    y = image @ w;
    loss mean(y);
}";
    let source = SourceFile::new("file.nn", text);
    let diags = check_source(&source)
        .expect_err("a shape error")
        .diagnostics;
    let out = source.render(&diags, false);
    assert!(
        out.starts_with(
            "error[shape]: matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 \
             and 128 differ\n"
        ),
        "{out}"
    );
    assert!(out.contains("┌─ file.nn:4:9\n"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "4 │     y = image @ w;")
        .unwrap_or_else(|| panic!("no source line in:\n{out}"));
    // `image @ w` is columns 9..18 of the source line.
    assert_eq!(
        lines[at + 1],
        format!("  │{}{}", " ".repeat(9), "^".repeat(9))
    );
    assert!(out.contains("this is f32[batch, 784]"), "{out}");
    assert!(out.contains("this is f32[128, 10]"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no colour codes when colour is off"
    );
    assert_eq!(
        source.locate(&diags[0]),
        "file.nn:4:9: matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 and \
         128 differ"
    );
}

#[test]
fn rendered_error_shows_the_hint() {
    let text = "network N {
    input image: f32[batch, 4];
    y = relu(imgae);
    loss mean(y);
}";
    let source = SourceFile::new("file.nn", text);
    let diags = check_source(&source)
        .expect_err("an unknown name")
        .diagnostics;
    let out = source.render(&diags, false);
    assert!(
        out.contains("error[unknown-name]: unknown name `imgae`\n"),
        "{out}"
    );
    assert!(out.contains("┌─ file.nn:3:14\n"), "{out}");
    assert!(out.contains("3 │     y = relu(imgae);\n"), "{out}");
    assert!(
        out.contains(&format!(
            "  │{}^^^^^ not defined before this use\n",
            " ".repeat(14)
        )),
        "{out}"
    );
    assert!(out.contains("= help: did you mean `image`?"), "{out}");
}

#[test]
fn rendered_colour_uses_ansi_codes() {
    let source = SourceFile::new("file.nn", "network N { loss mean(q); }");
    let diags = check_source(&source).expect_err("unknown name").diagnostics;
    assert!(source.render(&diags, true).contains('\u{1b}'));
}

// ---------------------------------------------------- cascades and totals

#[test]
fn an_unknown_name_does_not_cascade() {
    let text = "network N {
    input x: f32[batch, 4];
    h = relu(z);
    g = h + 1;
    k = dense(g, 3) |> softmax;
    output p = softmax(g);
    output k;
    loss mean(k) + mean(g);
}
train N {
    epochs: 2;
}";
    one(text, ErrorKind::UnknownName, (3, 14), "unknown name `z`");
}

#[test]
fn a_failed_layer_poisons_its_name_only() {
    let text = "network N {
    input x: f32[batch, 4];
    h = dense(x, 1.5);
    g = relu(h) @ h;
    y = x + 1;
    loss mean(g) + mean(y);
}";
    one(
        text,
        ErrorKind::BadArgument,
        (3, 18),
        "argument `units` of `dense` must be an integer, found the number 1.5",
    );
}

#[test]
fn independent_errors_are_all_reported_in_source_order() {
    let text = "network N {
    input x: f32[batch, 4];
    a = relu(q);
    b = dense(x, 1.5);
    param w: f32[3, 2];
    c = x @ w;
    loss mean(x);
}
network M {
    input x: f32[batch, 4];
    y = x;
    y = x;
}
train N {
    optimizer: adma;
    epochs: 0;
}";
    let (source, diags) = errors(text);
    let got: Vec<(ErrorKind, (usize, usize), &str)> = diags
        .iter()
        .map(|d| (d.kind, source.line_col(d.span.start), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::UnknownName, (3, 14), "unknown name `q`"),
            (
                ErrorKind::BadArgument,
                (4, 18),
                "argument `units` of `dense` must be an integer, found the number 1.5"
            ),
            (
                ErrorKind::ShapeMismatch,
                (6, 9),
                "matmul of f32[batch, 4] and f32[3, 2]: inner dimensions 4 and 3 differ"
            ),
            (ErrorKind::MissingLoss, (9, 9), "network `M` has no `loss`"),
            (ErrorKind::DuplicateName, (12, 5), "`y` is already defined"),
            (
                ErrorKind::BadArgument,
                (15, 16),
                "unknown optimizer `adma`; expected one of: sgd, momentum, adam, adamw, \
                 rmsprop, adagrad"
            ),
            (
                ErrorKind::BadArgument,
                (16, 13),
                "`epochs` must be a positive integer, found the integer 0"
            ),
        ]
    );
    let e = check_source(&source).expect_err("errors");
    assert_eq!(e.to_string(), "unknown name `q` (and 6 more errors)");
}

#[test]
fn the_example_model_compiles() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/mnist_mlp.nn"
    );
    let text = std::fs::read_to_string(path).expect("the example model");
    compiles(&text);
}

// ------------------------------------------------------------ convolutions

/// A network with one `y = ...;` statement over an input `x` and a weight `w`.
fn conv_net(x: &str, w: &str, call: &str) -> String {
    format!(
        "network N {{
    input x: f32[{x}];
    param w: f32[{w}];
    y = {call};
    loss mean(y);
}}"
    )
}

#[test]
fn conv2d_kernel_larger_than_the_padded_input() {
    let text = conv_net("batch, 1, 4, 4", "2, 1, 5, 5", "conv2d(x, w)");
    let d = one(
        &text,
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the kernel spans 5x5, more than the padded input's 4x4",
    );
    assert_eq!(spanned(&text, &d), "conv2d(x, w)");
    assert_eq!(
        notes(&text, &d),
        [
            ((4, 16), "this is f32[batch, 1, 4, 4]".to_string()),
            ((4, 19), "this is f32[2, 1, 5, 5]".to_string())
        ]
    );
    compiles(&conv_net(
        "batch, 1, 4, 4",
        "2, 1, 5, 5",
        "conv2d(x, w, padding: 1)",
    ));
    // Dilation spreads the kernel: 3 taps 3 apart span 7.
    one(
        &conv_net(
            "batch, 1, 4, 4",
            "2, 1, 3, 3",
            "conv2d(x, w, dilation: [1, 3], padding: 1)",
        ),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the kernel spans 3x7, more than the padded input's 6x6",
    );
}

#[test]
fn conv2d_channels_and_groups() {
    one(
        &conv_net("batch, 3, 8, 8", "4, 1, 3, 3", "conv2d(x, w, groups: 2)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the input's 3 channels are not divisible by groups: 2",
    );
    one(
        &conv_net("batch, 4, 8, 8", "3, 2, 3, 3", "conv2d(x, w, groups: 2)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the weight's 3 output channels are not divisible by groups: 2",
    );
    let d = one(
        &conv_net("batch, 3, 8, 8", "4, 2, 3, 3", "conv2d(x, w)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the weight takes 2 input channels, the input has 3",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("the weight's second dimension is in_channels / groups = 3")
    );
    one(
        &conv_net("batch, 4, 8, 8", "4, 4, 3, 3", "conv2d(x, w, groups: 2)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the weight takes 4 input channels, the input has 4 in 2 groups, 2 per group",
    );
    one(
        &conv_net("batch, 4, 8, 8", "4, 4, 3, 3", "conv2d(x, w, groups: 0)"),
        ErrorKind::BadArgument,
        (4, 9),
        "conv2d: `groups` must be at least 1, found 0",
    );
}

#[test]
fn conv2d_bad_strides_and_windows() {
    one(
        &conv_net("batch, 1, 8, 8", "2, 1, 3, 3", "conv2d(x, w, stride: 0)"),
        ErrorKind::BadArgument,
        (4, 9),
        "conv2d: `stride` must be at least 1, found 0",
    );
    one(
        &conv_net(
            "batch, 1, 8, 8",
            "2, 1, 3, 3",
            "conv2d(x, w, stride: [2, 0])",
        ),
        ErrorKind::BadArgument,
        (4, 9),
        "conv2d: `stride` must be at least 1, found [2, 0]",
    );
    one(
        &conv_net("batch, 1, 8, 8", "2, 1, 3, 3", "conv2d(x, w, padding: [1, 2, 3])"),
        ErrorKind::BadArgument,
        (4, 9),
        "`padding` must be a non-negative integer or a list [height, width] of them, found [1, 2, 3]",
    );
    one(
        &conv_net("batch, 1, 8, 8", "2, 1, 3, 3", "conv2d(x, w, stride: 1.5)"),
        ErrorKind::BadArgument,
        (4, 30),
        "argument `stride` of `conv2d` must be an integer or a list of integers, found the number 1.5",
    );
    one(
        &conv_net("batch, 2, 4, 4", "1", "max_pool2d(x, kernel: 5) * w"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "max_pool2d: the window 5x5 is larger than the padded input's 4x4",
    );
    one(
        &conv_net("batch, 2, 4, 4", "1", "max_pool2d(x, 2, stride: 0) * w"),
        ErrorKind::BadArgument,
        (4, 9),
        "max_pool2d: `stride` must be at least 1, found 0",
    );
    one(
        &conv_net("batch, 2, 4, 4", "1", "avg_pool2d(x, 2, padding: 2) * w"),
        ErrorKind::BadArgument,
        (4, 9),
        "avg_pool2d: `padding` 2 is more than half the window 2",
    );
}

#[test]
fn conv2d_and_pooling_need_nchw_inputs() {
    let d = one(
        &conv_net("batch, 784", "2, 1, 3, 3", "conv2d(x, w)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d expects an input f32[batch, channels, height, width] (NCHW, fixed channels and size), found f32[batch, 784]",
    );
    assert_eq!(d.notes.len(), 2);
    one(
        &conv_net("batch, 3, 8", "1", "global_avg_pool(x) * w"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "global_avg_pool expects an input f32[batch, channels, height, width] (NCHW, fixed channels and size), found f32[batch, 3, 8]",
    );
    one(
        &conv_net("batch, 1, 8, 8", "2, 1, 3", "conv2d(x, w)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d expects a weight f32[out_channels, in_channels / groups, kernel_h, kernel_w], found f32[2, 1, 3]",
    );
}

#[test]
fn conv2d_layer_errors_point_at_the_layer() {
    // The layer form: an integer second argument.
    let d = one(
        &conv_net("batch, 784", "1", "conv2d(x, 8, kernel: 3) * w"),
        ErrorKind::ShapeMismatch,
        (4, 16),
        "conv2d expects an input f32[batch, channels, height, width] (NCHW, fixed channels and size), found f32[batch, 784]",
    );
    assert_eq!(d.label, "this is f32[batch, 784]");
    one(
        &conv_net(
            "batch, 3, 8, 8",
            "1",
            "conv2d(x, 8, kernel: 3, groups: 2) * w",
        ),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the input's 3 channels are not divisible by groups: 2",
    );
    one(
        &conv_net(
            "batch, 4, 8, 8",
            "1",
            "conv2d(x, 3, kernel: 3, groups: 2) * w",
        ),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the weight's 3 output channels are not divisible by groups: 2",
    );
    one(
        &conv_net("batch, 4, 8, 8", "1", "(x |> conv2d(0, kernel: 3)) * w"),
        ErrorKind::BadArgument,
        (4, 22),
        "`filters` of `conv2d` must be a positive integer, found 0",
    );
    one(
        &conv_net(
            "batch, 4, 4, 4",
            "1",
            "conv2d(x, filters: 2, kernel: 5) * w",
        ),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "conv2d: the kernel spans 5x5, more than the padded input's 4x4",
    );
    one(
        &conv_net("batch, 4, 4, 4", "1", "conv2d(x, 2) * w"),
        ErrorKind::BadArgument,
        (4, 9),
        "`conv2d` is missing its argument `kernel` (an integer or a list of integers)",
    );
}

// ------------------------------------------------------ batch_norm, dropout

/// A network whose hidden layer is `expr` over `x: f32[{dims}]`.
fn norm_net(dims: &str, expr: &str) -> String {
    format!(
        "network N {{\n    input x: f32[{dims}];\n    label y: class[batch] of 2;\n    h = {expr};\n    loss cross_entropy(dense(flatten(h), 2), y);\n}}\n"
    )
}

#[test]
fn dropout_rate_must_be_a_probability() {
    let d = one(
        &norm_net("batch, 4", "dropout(x, rate: 1.0)"),
        ErrorKind::BadArgument,
        (4, 26),
        "`rate` of `dropout` must be in [0, 1), found 1",
    );
    assert_eq!(
        spanned(&norm_net("batch, 4", "dropout(x, rate: 1.0)"), &d),
        "1.0"
    );
    assert_eq!(d.label, "not a drop probability");
    one(
        &norm_net("batch, 4", "x |> dropout(rate: -0.5)"),
        ErrorKind::BadArgument,
        (4, 28),
        "`rate` of `dropout` must be in [0, 1), found -0.5",
    );
    one(
        &norm_net("batch, 4", "dropout(x)"),
        ErrorKind::BadArgument,
        (4, 9),
        "`dropout` is missing its argument `rate` (a number)",
    );
    compiles(&norm_net("batch, 4", "dropout(x, 0)"));
}

#[test]
fn dropout_needs_the_batch_first() {
    let d = one(
        &norm_net("4, batch", "dropout(x, rate: 0.5)"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "dropout expects a tensor whose first dimension (and only that one) is `batch`, found f32[4, batch]",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("the mask is drawn per sample, so the batch must lead")
    );
}

#[test]
fn batch_norm_needs_rank_2_or_4_with_fixed_channels() {
    let d = one(
        &norm_net("batch", "batch_norm(x)"),
        ErrorKind::ShapeMismatch,
        (4, 20),
        "batch_norm expects f32[batch, channels] or f32[batch, channels, height, width] (fixed channels and size), found f32[batch]",
    );
    assert_eq!(d.label, "this is f32[batch]");
    one(
        &norm_net("batch, 2, 3", "x |> batch_norm"),
        ErrorKind::ShapeMismatch,
        (4, 9),
        "batch_norm expects f32[batch, channels] or f32[batch, channels, height, width] (fixed channels and size), found f32[batch, 2, 3]",
    );
    compiles(&norm_net("batch, 2, 3, 3", "x |> batch_norm"));
    compiles(&norm_net(
        "batch, 5",
        "batch_norm(x, momentum: 0.01, eps: 1e-3)",
    ));
}

#[test]
fn batch_norm_momentum_and_eps_are_checked() {
    one(
        &norm_net("batch, 4", "batch_norm(x, momentum: 1.5)"),
        ErrorKind::BadArgument,
        (4, 33),
        "`momentum` of `batch_norm` must be in [0, 1], found 1.5",
    );
    one(
        &norm_net("batch, 4", "batch_norm(x, eps: 0)"),
        ErrorKind::BadArgument,
        (4, 28),
        "`eps` of `batch_norm` must be a positive number, found 0",
    );
    one(
        &norm_net("batch, 4", "batch_norm(x, mean: 0.1)"),
        ErrorKind::BadArgument,
        (4, 23),
        "`batch_norm` has no parameter `mean`; expected one of: x, momentum, eps",
    );
}

// ------------------------------------------------------------ sequence ops

/// A network over a token input `tokens: class[batch, 8] of 10` and a
/// float sequence `x: f32[batch, 8, 12]`; `body` is its fifth line.
fn seq_net(body: &str) -> String {
    format!(
        "network N {{
    input tokens: class[batch, 8] of 10;
    input x: f32[batch, 8, 12];
    label y: class[batch, 8] of 10;
    {body}
    loss cross_entropy(dense(h, 10), y);
}}"
    )
}

#[test]
fn sequence_layers_compile() {
    compiles(&seq_net(
        "h = self_attention(layer_norm(embedding(tokens, 12) + x), heads: 3, causal: true);",
    ));
    compiles(&seq_net(
        "h = concat(slice(x, axis: 1, start: 0, end: 4), slice(x, 1, 4), axis: 1);",
    ));
}

#[test]
fn heads_must_divide_the_width() {
    let text = seq_net("h = self_attention(x, heads: 5);");
    let d = one(
        &text,
        ErrorKind::BadArgument,
        (5, 34),
        "self_attention: 5 heads do not divide the width 12 of f32[batch, 8, 12]",
    );
    assert_eq!(spanned(&text, &d), "5");
    assert_eq!(
        d.help.as_deref(),
        Some("each head gets width / heads features; choose heads among 1, 2, 3, 4, 6, 12")
    );
    one(
        &seq_net("h = self_attention(x, heads: 0);"),
        ErrorKind::BadArgument,
        (5, 34),
        "self_attention: 0 heads do not divide the width 12 of f32[batch, 8, 12]",
    );
}

#[test]
fn self_attention_needs_a_sequence() {
    let text = seq_net("h = self_attention(flatten(x), heads: 2);");
    let d = one(
        &text,
        ErrorKind::ShapeMismatch,
        (5, 24),
        "self_attention expects a sequence f32[batch, length, width] (fixed length and width), found f32[batch, 96]",
    );
    assert_eq!(spanned(&text, &d), "flatten(x)");
}

#[test]
fn embedding_needs_token_ids() {
    let text = seq_net("h = embedding(x, 16);");
    let d = one(
        &text,
        ErrorKind::TypeMismatch,
        (5, 19),
        "embedding expects token ids (class-typed), found f32[batch, 8, 12]",
    );
    assert_eq!(spanned(&text, &d), "x");
    one(
        &seq_net("h = embedding(tokens, 0);"),
        ErrorKind::BadArgument,
        (5, 27),
        "`dim` of `embedding` must be a positive integer, found 0",
    );
    one(
        &seq_net("param t: f32[9, 4];\n    h = gather(t, tokens);"),
        ErrorKind::ShapeMismatch,
        (6, 9),
        "embedding: the table has 9 rows, the ids class[batch, 8] of 10 are in 0..10",
    );
}

#[test]
fn concat_and_slice_ranges() {
    one(
        &seq_net("h = concat(x, flatten(x), axis: 1);"),
        ErrorKind::ShapeMismatch,
        (5, 9),
        "concat along axis 1: f32[batch, 96] does not match f32[batch, 8, 12] in the other dimensions",
    );
    one(
        &seq_net("h = concat(x, x, axis: 0);"),
        ErrorKind::ShapeMismatch,
        (5, 9),
        "concat of f32[batch, 8, 12]: axis 0 is batch, whose size is unknown at compile time",
    );
    one(
        &seq_net("h = slice(x, axis: 2, start: 4, end: 13);"),
        ErrorKind::BadArgument,
        (5, 9),
        "slice 4..13 of axis 2 of f32[batch, 8, 12]: the range must be non-empty and within 0..12",
    );
    one(
        &seq_net("h = slice(x, axis: 3, start: 0);"),
        ErrorKind::BadArgument,
        (5, 9),
        "axis 3 is out of range for a tensor of rank 3",
    );
}

#[test]
fn layer_norm_and_causal_mask_arguments() {
    one(
        &seq_net("h = layer_norm(x, eps: 0);"),
        ErrorKind::BadArgument,
        (5, 28),
        "`eps` of `layer_norm` must be positive, found 0",
    );
    one(
        &seq_net("h = causal_mask(sum(x, axis: [1, 2]));"),
        ErrorKind::ShapeMismatch,
        (5, 9),
        "causal_mask expects scores f32[..., queries, keys] of rank 2 or more, found f32[batch]",
    );
}

#[test]
fn token_inputs_are_not_numbers() {
    one(
        &seq_net("h = x + tokens;"),
        ErrorKind::TypeMismatch,
        (5, 13),
        "`+` expects an f32 tensor, found class labels class[batch, 8] of 10",
    );
}
