"""Real corpora, tokenizers, deterministic splits and packed batches."""
