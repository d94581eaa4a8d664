"""The names every layer shares: columns, MLflow tag keys, artifact paths.

A leaf module (it imports nothing of this project), so the JVM-free scorer, the Spark stages,
the feature store and the registry spell a name the same way by importing it from here.
"""

from __future__ import annotations

# --- columns -----------------------------------------------------------------------------------
PATH = "path"  # a file's qualified URI, as Spark's binaryFile source spells it
IMAGE_ID = "image_id"
LABEL = "label"
CONTENT = "content"  # an image file's bytes
SHA = "image_sha256"  # of those bytes: an image's identity in the feature store
FEATURES = "features"  # the CNN's vector
ERROR = "featurize_error"  # why an image has no features (null when it has)
PREDICTION = "prediction"
LABEL_INDEX = "label_index"  # the StringIndexer's index of LABEL
PREDICTION_INDEX = "prediction_index"  # the classifier's, before IndexToString names it
QUARANTINE_REASON = "reason"  # ERROR's name in quarantine.csv and the predictions' CSV
PASSED_THROUGH = (PATH, IMAGE_ID)  # what a scorer hands back beside its prediction
# the tasks (sparkles.tasks): one class per image, or a set of classes per image
SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"  # also data.multi_label_policy's word for it
# multi-label: an image's set of classes, true and said
LABELS = "labels"
PREDICTED_LABELS = "predicted_labels"


def probability_column(label: str) -> str:
    return f"probability_{label}"


# --- run tags ----------------------------------------------------------------------------------
PROFILE_TAG = "sparkles.profile"
COMMAND_TAG = "sparkles.command"
ERROR_TAG = "sparkles.error"
PROFILE_EXPERIMENT_TAG = "sparkles.profile_experiment"
# what a featurize/main run committed, copied into the train/tune runs that fit on it
FEATURES_KEY_TAG = "sparkles.features.key"  # the profile's features key
FEATURIZER_TAG = "sparkles.features.featurizer"  # the profile's featurizer section, as JSON
FEATURES_RUN_TAG = "sparkles.features.run_id"  # set by train/tune: whose table they fitted on
STORE_FINGERPRINT_TAG = "sparkles.store.fingerprint"
STORE_PATH_TAG = "sparkles.store.path"  # the feature store's root
STORE_TABLE_TAG = "sparkles.store.table"
STORE_REUSED_TAG = "sparkles.store.reused"
# runs logged before "store" was the one word for the feature store said "cache" (tracking.tag)
RENAMED_TAG_PREFIXES = {"sparkles.store.": "sparkles.cache."}
WEIGHTS_USED_TAG = "sparkles.weights.used"  # imagenet, file, random
WEIGHTS_IDENTITY_TAG = "sparkles.weights.identity"
WEIGHTS_PATH_TAG = "sparkles.weights.path"  # the weights file the CNN ran with, on that driver
RUNTIME_TAG = "sparkles.featurizer.runtime"
PRECISION_TAG = "sparkles.featurizer.precision"
CALIBRATION_TAG = "sparkles.featurizer.calibration"  # int8: the calibration set's identity
PRECISION_REQUESTED_TAG = "sparkles.featurizer.precision_requested"
# the tag prefixes a train/tune run copies from the run that committed its table
FEATURE_SOURCE_PREFIXES = (
    "sparkles.store.",
    "sparkles.cache.",
    "sparkles.weights.",
    "sparkles.featurizer.",
)
CLASSES_TAG = "sparkles.classes"
BEST_RUN_TAG = "sparkles.best_run_id"
TRIALS_TAG = "sparkles.trials"
SCORING_TAG = "sparkles.model.scores_images"  # on runs that logged a model scoring image bytes
PROMOTION_TAG_PREFIX = "sparkles.promotion."
# set by `mlflow run --backend emr` (emr_backend): where the run's step runs
EMR_CLUSTER_TAG = "sparkles.emr.cluster_id"
EMR_STEP_TAG = "sparkles.emr.step_id"
EMR_PROJECT_TAG = "sparkles.emr.project"  # the project archive in S3

# --- artifacts ---------------------------------------------------------------------------------
MODEL_ARTIFACT = "model"  # the one logged model: Spark and python_function flavours
SERVING_DATA = "serving"  # inside a logged model: settings.json + classifier.json
SETTINGS_FILE = "settings.json"
CLASSIFIER_FILE = "classifier.json"
WEIGHTS_DIR = "weights"  # inside a saved DeepImageFeaturizer stage
FEATURIZE_ARTIFACTS = "featurize"  # quarantine.csv, featurize_counts.json
EVALUATION_ARTIFACTS = "evaluation"  # plots, test predictions
TUNING_ARTIFACTS = "tuning"
EDA_ARTIFACTS = "eda"
EMR_STEP_ARTIFACTS = "emr-step"  # an EMR step's stdout and stderr (teed by emr.step, else S3's)
SPARK_ARTIFACTS = "spark"  # stages.csv, timeline.png, plans/, eventlog/ (sparkles.observe)

# --- a run's Spark application (sparkles.observe) ---------------------------------------------
SPARK_APP_TAG = "sparkles.spark.app_id"
SPARK_VERSION_TAG = "sparkles.spark.version"
SPARK_MASTER_TAG = "sparkles.spark.master"
SPARK_EVENT_LOG_TAG = "sparkles.spark.event_log_dir"
SPARK_EVENT_LOG_ATTACHED_TAG = "sparkles.spark.event_log_attached"  # its name, or "no: why"
SPARK_UI_TAG = "sparkles.spark.ui"  # the live UI while the application ran
EMR_HISTORY_TAG = "sparkles.emr.history_server"  # EMR's persistent Spark History Server
