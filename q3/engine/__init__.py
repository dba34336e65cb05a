"""The one corpus engine every corpus job runs on (docs/engine.md).

    read_corpus   -> a corpus folder as Arrow (local) or a DataFrame (Spark), conformed to DOC_SCHEMA
    map_batches   -> a pure RecordBatch -> RecordBatch function, by a local loop or Spark mapInArrow
    write_split   -> kept/ (by lang) + rejected/ (reason, stage, detail), kept + rejected = input checked
    q3.commit     -> the keyed atomic commit (config + input content + code version)
    session       -> the Spark session factory and cluster profiles
"""
