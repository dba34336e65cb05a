"""Corpus pipeline: readers, stage functions over Arrow batches, Spark jobs, token datasets, manifests."""
