"""Seeded stratified splits and folds of images, on small frames made here (spark tier)."""

from __future__ import annotations

from sparkles.train.splits import split_params, stratified_folds, stratified_split, train_and_test


def _frame(spark, per_class: dict[str, int]):
    rows = [
        (f"{label.lower()}{k}", label, f"/d/{label.lower()}{k}.jpg")
        for label, count in per_class.items()
        for k in range(count)
    ]
    return spark.createDataFrame(rows, "image_id string, label string, path string")


def test_split_is_stratified_and_repeatable(spark) -> None:
    frame = _frame(spark, {"Car": 61, "Tree": 57})
    first = stratified_split(frame, 0.25, seed=3)
    again = stratified_split(frame, 0.25, seed=3)
    other = stratified_split(frame, 0.25, seed=4)
    paths = [sorted(r.path for r in part.collect()) for part in (*first, *again, other[1])]
    assert paths[0] == paths[2] and paths[1] == paths[3]
    assert paths[1] != paths[4]
    assert not set(paths[0]) & set(paths[1])
    assert len(paths[0]) + len(paths[1]) == frame.count()
    per_class = {r.label: r["count"] for r in frame.groupBy("label").count().collect()}
    test_per_class = {r.label: r["count"] for r in first[1].groupBy("label").count().collect()}
    for label, total in per_class.items():
        assert test_per_class[label] == round(total * 0.25)
    folds = stratified_folds(frame, 3, seed=3).groupBy("label", "fold").count().collect()
    for label, total in per_class.items():
        sizes = sorted(r["count"] for r in folds if r.label == label)
        assert sum(sizes) == total and sizes[-1] - sizes[0] <= 1


def test_the_split_of_a_run_is_the_one_its_params_name(spark, tmp_path) -> None:
    """train, tune and the registry's gate all call train_and_test with logged (string) params."""
    from sparkles.config import load_profile
    from tests.conftest import write_profile

    frame = _frame(spark, {"Car": 30, "Tree": 30})
    settings = load_profile(str(write_profile(tmp_path)), ["train.seed=5"]).train
    params = split_params(settings)
    assert params == {"test_fraction": settings.test_fraction, "split_seed": 5}
    logged = {k: str(v) for k, v in params.items()}
    ids = [
        sorted(r.image_id for r in train_and_test(frame, given)[1].collect())
        for given in (params, logged)
    ]
    assert ids[0] == ids[1] and len(ids[0]) == round(30 * settings.test_fraction) * 2


def test_split_keeps_an_images_rows_together(spark) -> None:
    """keep-all: an image with two classes is two rows, and both land on the same side."""
    rows = [(f"i{k}", "Car" if k % 2 else "Tree", f"/d/i{k}.jpg") for k in range(40)]
    rows += [(f"i{k}", "Tree", f"/d/i{k}.jpg") for k in range(1, 40, 4)]  # ten with both
    frame = spark.createDataFrame(rows, "image_id string, label string, path string")
    for seed in range(5):
        rest, held_out = stratified_split(frame, 0.3, seed)
        sides = [
            {r.image_id for r in part.select("image_id").collect()} for part in (rest, held_out)
        ]
        assert not sides[0] & sides[1]
        assert rest.count() + held_out.count() == len(rows)
        both = {
            r.image_id for r in held_out.groupBy("image_id").count().where("count = 2").collect()
        }
        assert len(both) == 3  # round(10 × 0.3) of the Car|Tree images
    folds = stratified_folds(frame, 3, seed=1).select("image_id", "fold").distinct()
    assert folds.count() == 40  # one fold per image
