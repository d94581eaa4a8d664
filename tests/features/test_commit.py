"""The fingerprint that names stores and training tables (unit tier)."""

from __future__ import annotations

from sparkles.features.commit import fingerprint


def test_the_fingerprint_is_of_settings_and_rows_in_order() -> None:
    rows = [("a", "Car", "1"), ("b", "Tree", "2")]
    key = fingerprint({"model": "InceptionV3", "pooling": "avg"}, rows)
    assert len(key) == 20 and int(key, 16) >= 0
    assert fingerprint({"pooling": "avg", "model": "InceptionV3"}, iter(rows)) == key
    assert fingerprint({"model": "InceptionV3", "pooling": "max"}, rows) != key
    assert fingerprint({"model": "InceptionV3", "pooling": "avg"}, rows[::-1]) != key
    relabelled = [("a", "Tree", "1"), ("b", "Tree", "2")]
    assert fingerprint({"model": "InceptionV3", "pooling": "avg"}, relabelled) != key


def test_rows_are_separated_so_values_cannot_slide_between_columns() -> None:
    settings = {"model": "MobileNetV2"}
    assert fingerprint(settings, [("ab", "c")]) != fingerprint(settings, [("a", "bc")])
    assert fingerprint(settings, [("a",), ("b",)]) != fingerprint(settings, [("a", "b")])
