"""lumbarjax.selection: Outcome-model selection: the linear family, the clinical offset, the ablation and the stacked reported model."""
