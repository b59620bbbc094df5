"""`seedlings data inspect`: counts per class, image-size spread, duplicates and problems."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from seedlings.data.cache import scan
from seedlings.data.index import index_folder
from seedlings.tables import print_table


def inspect_folder(root, progress: bool = True) -> dict:
    index = index_folder(root)
    sizes, by_hash, problems = [], defaultdict(list), []
    for res in scan(index, image_size=None, progress=progress, description=f"Inspecting {index.root.name}"):
        if res.size is None:
            problems.append({"path": res.path, "code": res.code, "reason": res.reason})
            continue
        sizes.append(res.size)
        by_hash[res.sha1].append(res.path)
    duplicates = [paths for paths in by_hash.values() if len(paths) > 1]
    return {"root": str(index.root), "classes": index.classes, "counts": index.counts(), "n_files": len(index),
            "n_readable": len(sizes), "sizes": _size_summary(sizes), "duplicates": duplicates,
            "cross_class_duplicates": [d for d in duplicates if len({p.split("/")[0] for p in d}) > 1],
            "problems": problems, "ignored": index.ignored}


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    if not sizes:
        return {}
    w = np.asarray([s[0] for s in sizes])
    h = np.asarray([s[1] for s in sizes])
    side = np.minimum(w, h)
    q = lambda a: {"min": int(a.min()), "p5": int(np.percentile(a, 5)), "median": int(np.median(a)),  # noqa: E731
                   "p95": int(np.percentile(a, 95)), "max": int(a.max())}
    return {"width": q(w), "height": q(h), "short_side": q(side),
            "non_square": int((w != h).sum()), "distinct_sizes": len(set(sizes))}


def print_inspection(result: dict) -> None:
    counts = result["counts"]
    total = sum(counts.values())
    largest = max(counts.values())
    print_table(f"{result['root']}: {total} images in {len(counts)} classes",
                ["class", "images", "share", ""],
                [[c, n, f"{n / total:.1%}", "█" * max(1, round(30 * n / largest))] for c, n in counts.items()])
    s = result["sizes"]
    if s:
        print_table("image sizes (pixels)", ["", "min", "p5", "median", "p95", "max"],
                    [[k, *s[k].values()] for k in ("width", "height", "short_side")])
        print(f"{s['distinct_sizes']} distinct sizes, {s['non_square']} non-square images")
    print(f"{len(result['duplicates'])} group(s) of identical files"
          f" ({len(result['cross_class_duplicates'])} across classes)")
    for group in result["duplicates"][:20]:
        print("  same bytes: " + ", ".join(group))
    print(f"{len(result['problems'])} unreadable file(s); {len(result['ignored'])} non-image file(s) ignored")
    for p in result["problems"]:
        print(f"  {p['path']}: {p['reason']}")
