"""Watching a search where its users already look: Optuna's dashboard, Ray's dashboard, MLflow.

- `optuna_study`: the search's Optuna study in a journal file of the run folder (`optuna-dashboard` reads it),
  with pruned trials as PRUNED.
- `trial_names`: trial actors named by what they run in Ray's dashboard (`lite1/all svm C=9.2 adam lr=0.003`).
- `ray_metrics`: the search's progress as Ray custom metrics (trials by state, best score, extraction images/s).
- `mlflow_logging`: one MLflow parent run per search, a child run per trial (optional: `automl[mlflow]`).

The search driver reaches these through a few marked hook lines; nothing here changes what a search computes.
"""
