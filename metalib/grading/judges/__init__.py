"""Per-assignment judges (`metalib.grading.judge.Judge`): probes and reference implementations."""
