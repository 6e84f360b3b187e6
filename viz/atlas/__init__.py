"""The head atlas over a corpus: per-head statistics (core), fixed chunks of partial sums (chunks), the
resumable file job (job), the Ray engine (ray_engine) and corpora of any size read a chunk at a time (stream)."""
