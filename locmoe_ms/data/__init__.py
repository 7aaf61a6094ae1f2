"""Real corpora, tokenizers, deterministic splits, packed rows, MindRecord files and (domain-sharded) batch streams.

May import: config, errors, paths, parallel (topology, for domain-sharded rows). Never the model or training.
"""
