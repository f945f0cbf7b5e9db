"""Raw text -> sparse TF-IDF features: normalisation, analyzers, scikit-learn-fitted blocks, the featurizer.

    from xmr.text import TextFeaturizer
    feat = TextFeaturizer.from_spec("word+char").fit(train_texts)
    X = feat.transform(texts)                    # CSR float32, rows L2-normalised
    idx, vals = feat.transform_one("echo dot")   # fast single-query path, == row 0 of transform([...])
    feat.save(dir); feat = TextFeaturizer.load(dir)
"""

from xmr.text.analyzers import char_ngrams, prefix_char_ngrams, word_ngrams
from xmr.text.featurizer import TextFeaturizer
from xmr.text.normalize import normalize, tokenize
from xmr.text.vectorizers import TfidfBlock

__all__ = [
    "TextFeaturizer",
    "TfidfBlock",
    "normalize",
    "tokenize",
    "word_ngrams",
    "char_ngrams",
    "prefix_char_ngrams",
]
