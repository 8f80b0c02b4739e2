"""Code shared by the command-line tools in ``scripts/``: reading and checking text files, the
Moses tokenizer, fairseq training logs. Light on purpose: it imports neither torch nor fairseq,
so the text tools start fast (the plugin package ``rdrop_fairseq`` imports fairseq)."""
