"""Datasets: folder index and classes, stratified split, prepared cache, several folders joined (numpy only)."""

from seedlings.data.cache import PreparedData, prepare
from seedlings.data.index import DatasetIndex, index_folder
from seedlings.data.sources import join, prepare_folders
from seedlings.data.split import Split, Subset, fold_split, stratified_folds, stratified_split

__all__ = ["DatasetIndex", "index_folder", "PreparedData", "prepare", "prepare_folders", "join", "Split", "Subset",
           "stratified_split", "stratified_folds", "fold_split"]
