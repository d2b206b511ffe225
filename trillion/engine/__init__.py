"""The inference engine: V4's attention state, incremental decoding, batching, sampling, MTP drafts."""
