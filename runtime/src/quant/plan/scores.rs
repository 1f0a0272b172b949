//! The int8 model read for its scores: a plan that ends in a softmax ends
//! in probabilities, but evaluation and `predict` want the logits the loss
//! compares (the loss, its metrics and the predictions file all start from
//! logits), so [`Int8Model::into_scores`] drops that last step.

use super::{Int8Model, PlanError, Step};

impl Int8Model {
    /// This model without its final softmax step, if it has one: its
    /// output is then the softmax's input (a classifier's logits). The
    /// weights, the activation quantization and every other step are
    /// unchanged; the values the softmax read were f32 already, so the
    /// remaining steps compute exactly what they computed before.
    ///
    /// # Errors
    /// As the model's assembly: a layer whose input layout does not fit.
    pub fn into_scores(self) -> Result<Self, PlanError> {
        let Int8Model {
            mut plan,
            mut layers,
            acts,
            ..
        } = self;
        if let Some(&Step::Softmax { input, out, .. }) = plan.steps.last() {
            if out == plan.output {
                plan.steps.pop();
                layers.pop();
                plan.output = input;
            }
        }
        Int8Model::assemble(plan, layers, acts)
    }

    /// Values per sample of the model's input.
    pub fn input_len(&self) -> usize {
        self.plan.values[self.plan.input]
    }

    /// Values per sample of the model's output.
    pub fn output_len(&self) -> usize {
        self.plan.values[self.plan.output]
    }
}
