"""data/inspect.py: counts, image sizes, duplicates and unreadable files of a labelled folder."""

from __future__ import annotations

from tests.helpers import make_dataset

from seedlings.data.inspect import inspect_folder, print_inspection


def test_inspection_finds_duplicates_and_problems(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", per_class=3)
    (data / "Sugar beet" / "copy.png").write_bytes((data / "Black-grass" / "img_000.png").read_bytes())
    (data / "Sugar beet" / "broken.png").write_bytes(b"not a png")
    result = inspect_folder(data, progress=False)
    assert result["counts"] == {"Black-grass": 3, "Common Chickweed": 3, "Sugar beet": 5}
    assert result["n_readable"] == 10 and [p["path"] for p in result["problems"]] == ["Sugar beet/broken.png"]
    assert sorted(result["duplicates"][0]) == ["Black-grass/img_000.png", "Sugar beet/copy.png"]
    assert result["sizes"]["width"]["min"] == 48
    print_inspection(result)
    assert "Sugar beet" in capsys.readouterr().out
