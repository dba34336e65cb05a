"""Multi-dimension annotation: LLM-judge rubrics, classifiers trained on judge labels, applied in Spark."""
