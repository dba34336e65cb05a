"""`q3 label <verb>`: judge a sample, train classifiers on judge labels, label every document."""

from q3.verbs import verb

VERBS = {
    "judge": verb("labeling.judge:cli", "LLM-judge a stratified sample on every dimension."),
    "train": verb("labeling.classifier:cli", "Train per-dimension classifiers on judge labels; report agreement."),
    "run": verb("labeling.apply:cli", "Apply classifiers + rule signals to every kept document (local or Spark: runner=auto)."),
    "demo": verb("labeling.demo:cli", "judge -> train -> run in one go (rule-based judge if no endpoint)."),
}
