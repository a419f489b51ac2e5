"""Dataset audit: likely label errors, near-duplicates (leakage across splits and folds), outliers, imbalance.

Everything comes from out-of-fold probabilities and the cached pooled vectors (cut `all`): seconds once the
cache is warm, and nothing in the dataset folder is moved or deleted (the user decides). Modules:
`neighbours` (cosine geometry: near-duplicate pairs and groups, distance to the classes), `findings` (the
audit of one set of predictions + features, and its JSON/CSV), `grouping` (near-duplicate groups for the
split), `run` (a recipe or a run folder end to end: `automl data audit`, and the end of every search).
"""
