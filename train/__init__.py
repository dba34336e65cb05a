"""megatron-core Qwen3 trainer (dense and MoE), checkpoints, HF export/import, generation, post-training.

Never imports dataproc/ or pyspark: it meets the corpus through manifests and .bin/.idx files.
"""

import q3.log  # noqa: F401,E402  (first: quiets megatron-core import-time INFO lines and TE/APEX warnings)
