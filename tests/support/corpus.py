"""A small synthetic German-English parallel corpus, so that the tests that run fairseq's command
lines need no downloaded data.

Learnable by a tiny Transformer: each German word has a fixed English translation, and the only
reordering is the German perfect tense putting its participle at the end of the clause
("der Hund hat die Katze gesehen" -> "the dog has seen the cat"). Real-looking surface forms
(capitals, commas, quotes, hyphenated compounds, a final period) give the tokenizer something to
do; for each sentence the generator also writes the text that Moses' tokenizer.perl gives, so the
recipe tests can check the pipeline against a reference that does not come from the pipeline.
"""

import random
from dataclasses import dataclass

NOUNS = [  # German, gender article, English
    ("Hund", "der", "dog"),
    ("Katze", "die", "cat"),
    ("Haus", "das", "house"),
    ("Baum", "der", "tree"),
    ("Stadt", "die", "city"),
    ("Kind", "das", "child"),
    ("Buch", "das", "book"),
    ("Auto", "das", "car"),
    ("Straße", "die", "street"),
    ("Schule", "die", "school"),
    ("Frau", "die", "woman"),
    ("Mann", "der", "man"),
    ("Vogel", "der", "bird"),
    ("Garten", "der", "garden"),
    ("Lehrer", "der", "teacher"),
    ("Fluss", "der", "river"),
    ("Berg", "der", "mountain"),
    ("Tisch", "der", "table"),
    ("Brief", "der", "letter"),
    ("Ampel", "die", "light"),
    ("Brücke", "die", "bridge"),
    ("Fenster", "das", "window"),
    ("Bild", "das", "picture"),
    ("Zug", "der", "train"),
]
COMPOUNDS = [
    ("Fußgänger-Ampel", "die", "pedestrian-light"),
    ("Stadt-Garten", "der", "city-garden"),
    ("Kinder-Buch", "das", "children-book"),
    ("Berg-Fluss", "der", "mountain-river"),
]
ADJECTIVES = [
    ("große", "big"),
    ("kleine", "small"),
    ("rote", "red"),
    ("alte", "old"),
    ("neue", "new"),
    ("schnelle", "fast"),
    ("grüne", "green"),
    ("schöne", "beautiful"),
    ("dunkle", "dark"),
]
PARTICIPLES = [
    ("gesehen", "seen"),
    ("gefunden", "found"),
    ("gekauft", "bought"),
    ("gemalt", "painted"),
    ("gesucht", "looked for"),
    ("getragen", "carried"),
    ("gebaut", "built"),
    ("verloren", "lost"),
    ("besucht", "visited"),
    ("gezeigt", "shown"),
]
PLACES = [("in", "in"), ("neben", "next to"), ("hinter", "behind"), ("vor", "in front of")]
DATIVE = {"der": "dem", "die": "der", "das": "dem"}
ACCUSATIVE = {"der": "den", "die": "die", "das": "das"}


@dataclass(frozen=True)
class Pair:
    """One sentence pair: raw text and the tokens tokenizer.perl gives (``-a``: hyphens split)."""

    de: str
    en: str
    de_tokens: tuple
    en_tokens: tuple

    def tokenized(self, lang, lowercase=False, aggressive_dash=False):
        tokens = self.de_tokens if lang == "de" else self.en_tokens
        if aggressive_dash:
            tokens = [t for token in tokens for t in token.replace("-", " @-@ ").split()]
        text = " ".join(tokens).replace('"', "&quot;")
        return text.lower() if lowercase else text


def _noun_phrase(rng, case):
    """(German tokens, English tokens): article, maybe an adjective, a noun or a compound."""
    noun, gender, english = rng.choice(NOUNS)
    if rng.random() < 0.1:
        noun, gender, english = rng.choice(COMPOUNDS)
    article = {"nom": gender, "acc": ACCUSATIVE[gender], "dat": DATIVE[gender]}[case]
    de, en = [article], ["the"]
    if rng.random() < 0.4:
        adjective, adjective_en = rng.choice(ADJECTIVES)
        weak = case == "dat" or case == "acc" and gender == "der"  # den großen, dem großen
        de.append(adjective + "n" if weak else adjective)
        en.append(adjective_en)
    return de + [noun], en + [english]


def _clause(rng):
    subject_de, subject_en = _noun_phrase(rng, "nom")
    object_de, object_en = _noun_phrase(rng, "acc")
    participle, participle_en = rng.choice(PARTICIPLES)
    place_de, place_en = [], []
    if rng.random() < 0.4:
        preposition, preposition_en = rng.choice(PLACES)
        where_de, where_en = _noun_phrase(rng, "dat")
        place_de, place_en = [preposition, *where_de], preposition_en.split() + where_en
    de = [*subject_de, "hat", *object_de, *place_de, participle]
    en = [*subject_en, "has", *participle_en.split(), *object_en, *place_en]
    return de, en


def _sentence(rng):
    de, en = _clause(rng)
    for _ in range(rng.choice([0, 1, 1, 2])):
        more_de, more_en = _clause(rng)
        de, en = [*de, ",", "und", *more_de], [*en, ",", "and", *more_en]
    if rng.random() < 0.1:  # reported speech in quotes
        speaker_de, speaker_en = _noun_phrase(rng, "nom")
        de = [*speaker_de, "sagt", ":", '"', *_capitalize(de), '"']
        en = [*speaker_en, "says", ":", '"', *_capitalize(en), '"']
    return de + ["."], en + ["."]


def _detokenize(tokens):
    """The raw sentence: a capital first letter, no space before , : . nor inside the quotes."""
    text, quote_open = "", False
    for token in tokens:
        if token == '"':
            text += ' "' if not quote_open else '"'
            quote_open = not quote_open
        elif token in ",:." or text.endswith('"') and quote_open:
            text += token
        else:
            text += " " + token
    text = text.strip()
    return text[0].upper() + text[1:]


def _capitalize(tokens):
    return (tokens[0][0].upper() + tokens[0][1:], *tokens[1:])


def pairs(n, seed):
    """n sentence pairs, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        de, en = _sentence(rng)
        de, en = _capitalize(de), _capitalize(en)
        out.append(Pair(_detokenize(de), _detokenize(en), de, en))
    return out


SPLITS = {"train": (1000, 1), "valid": (20, 2), "test": (20, 3)}  # name: (pairs, seed)


def write(folder):
    """folder/{train,valid,test}.{de,en} (raw) and folder/tok/ (tokenized, lowercased, as
    prepare-iwslt14.sh leaves them); return {split: [Pair]}."""
    (folder / "tok").mkdir(parents=True)
    corpus = {split: pairs(n, seed) for split, (n, seed) in SPLITS.items()}
    for split, items in corpus.items():
        for lang in ("de", "en"):
            raw = "".join(getattr(p, lang) + "\n" for p in items)
            tok = "".join(p.tokenized(lang, lowercase=True) + "\n" for p in items)
            (folder / f"{split}.{lang}").write_text(raw, encoding="utf-8")
            (folder / "tok" / f"{split}.{lang}").write_text(tok, encoding="utf-8")
    return corpus
