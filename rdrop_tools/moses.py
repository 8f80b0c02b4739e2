"""The Moses tokenizer of the recipes: tokenizer.perl as sacremoses ports it, fixed."""

import re

import sacremoses


class MosesTokenizer(sacremoses.MosesTokenizer):
    """sacremoses' port of tokenizer.perl plus a rule of the current perl script that it lacks:
    a period ending the last word of a line is split off, whatever the word
    (``u.s.`` -> ``u.s .``)."""

    FINAL_PERIOD = re.compile(r"(\S)\.$")

    def handles_nonbreaking_prefixes(self, text):
        return self.FINAL_PERIOD.sub(r"\1 .", super().handles_nonbreaking_prefixes(text))
