"""The topic classifier's baseline: TF-IDF (words and bigrams) + logistic regression (scikit-learn), its C chosen on
validation and scored once on test. (The language models' baseline is research/text/ngram.py.)"""

import numpy as np


def tfidf(split, cs=(1.0, 3.0, 10.0, 30.0)) -> dict[str, float]:
    """{tfidf_valid_accuracy, tfidf_C, tfidf_test_accuracy} on a Split of LabelledTexts."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # scikit-learn only where it is used
    from sklearn.linear_model import LogisticRegression
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_X = vectorizer.fit_transform(split.train.texts)
    valid_X, test_X = vectorizer.transform(split.valid.texts), vectorizer.transform(split.test.texts)
    scores = {}
    for c in cs:
        model = LogisticRegression(C=c, max_iter=2000).fit(train_X, split.train.labels)
        scores[c] = (float(np.mean(model.predict(valid_X) == split.valid.labels)), model)
    c = max(scores, key=lambda k: scores[k][0])
    valid_accuracy, model = scores[c]
    return {"tfidf_valid_accuracy": valid_accuracy, "tfidf_C": c,
            "tfidf_test_accuracy": float(np.mean(model.predict(test_X) == split.test.labels))}
