"""automl: find the best transfer-learning image classifier for your own photos."""

__version__ = "0.1.0"
