"""Datasets: folder index and classes, stratified split, prepared cache (numpy only, no torch)."""

from seedlings.data.cache import PreparedData, prepare
from seedlings.data.index import DatasetIndex, index_folder
from seedlings.data.split import Split, Subset, fold_split, stratified_folds, stratified_split

__all__ = ["DatasetIndex", "index_folder", "PreparedData", "prepare", "Split", "Subset", "stratified_split",
           "stratified_folds", "fold_split"]
