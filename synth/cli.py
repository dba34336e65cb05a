"""`q3 synth <verb>`: synthetic generation, verifiable RL pairs, long-CoT cold start."""

from q3.verbs import verb

VERBS = {
    "run": verb("synth.engine:cli", "Generate synthetic data from templates against an endpoint (local, or Spark on a cluster)."),
    "verifiable": verb("synth.generators:cli", "Emit programmatic RL query-verifier pairs (math, code, logic)."),
    "coldstart": verb("synth.coldstart:cli", "Build the filtered long-CoT cold-start SFT set."),
}
