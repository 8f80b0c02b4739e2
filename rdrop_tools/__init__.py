"""The installed command-line tools (rdrop-evaluate, rdrop-export, ...: pyproject.toml lists
them) and what they share: reading and checking text files, progress on a terminal, the Moses
tokenizer, fairseq training logs. Light on purpose: it imports neither torch nor fairseq, so the
text tools start fast (the plugin package ``rdrop_fairseq`` imports fairseq)."""
