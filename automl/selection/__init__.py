"""Model selection on the development pool (train + val): folds, out-of-fold predictions, calibration, ensembles."""
