"""sparkles: transfer-learning image classification on Apache Spark, tracked with MLflow."""

__version__ = "0.3.0"
