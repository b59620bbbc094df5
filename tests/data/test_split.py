from __future__ import annotations

from collections import Counter

from seedlings.data import Split, stratified_split


def test_stratified_seeded_and_disjoint(tmp_path):
    files = [f"c{c}/{i}.png" for c in range(3) for i in range([100, 40, 7][c])]
    labels = [int(f[1]) for f in files]
    s1 = stratified_split(files, labels, 0.15, seed=1)
    s2 = stratified_split(files, labels, 0.15, seed=1)
    s3 = stratified_split(files, labels, 0.15, seed=2)
    assert s1.val == s2.val and s1.val != s3.val
    assert not set(s1.train) & set(s1.val)
    assert len(s1.train) + len(s1.val) == len(files)
    per_class = Counter(f.split("/")[0] for f in s1.val)
    assert per_class == {"c0": 15, "c1": 6, "c2": 1}
    s1.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json").val == s1.val


def test_tiny_class_keeps_a_training_image():
    s = stratified_split(["a/1", "a/2", "b/1"], [0, 0, 1], 0.5, seed=0)
    assert "b/1" in s.train and len([f for f in s.val if f.startswith("a")]) == 1
