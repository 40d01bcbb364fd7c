"""The text side against Hugging Face's PyTorch BERT: logits, token-level backward-pass KD
computed with the explicit one-hot tensor, and one KD + backward-KD AdamW step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments.torch_reference import steps as torch_steps, text_steps  # noqa: E402
from kd_jax import backward  # noqa: E402
from kd_jax.models import bert  # noqa: E402
from kd_jax import methods  # noqa: E402
from kd_jax.methods import backward_kd  # noqa: E402
from kd_jax.models import adapters  # noqa: E402
from kd_jax.train import optim, sharding, step as step_lib  # noqa: E402
from kd_jax.train.preprocess import TextPreprocess  # noqa: E402

TEACHER = bert.BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=24,
                          max_position_embeddings=16, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, num_labels=3)
STUDENT = dataclasses.replace(TEACHER, hidden_size=8, num_hidden_layers=1, intermediate_size=16)


def _models():
  pairs = []
  for config, seed in ((TEACHER, 0), (STUDENT, 1)):
    model = bert.BertClassifier(config)
    params = jax.tree.map(np.asarray, bert.init_params(model, jax.random.PRNGKey(seed)))
    pairs.append((model, params, text_steps.hf_model_from_flax(params, config)))
  return pairs


def _batch():
  ids = np.array([[2, 7, 9, 11, 3, 0], [2, 5, 30, 3, 14, 3]], np.int32)  # 2 [CLS], 3 [SEP]
  types = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], np.int32)
  mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], np.int32)
  perturb = (mask > 0) & ~np.isin(ids, [0, 2, 3])
  return ids, types, mask, perturb


def _t(x):
  return torch.from_numpy(np.asarray(x)).long()


def test_logits_and_token_samples_match_hugging_face_bert():
  (teacher, t_params, t_hf), (student, s_params, s_hf) = _models()
  ids, types, mask, perturb = _batch()
  t_hf.eval()
  with torch.no_grad():
    expected = t_hf(input_ids=_t(ids), token_type_ids=_t(types), attention_mask=_t(mask)).logits
  np.testing.assert_allclose(teacher.apply({"params": t_params}, ids, types, mask),
                             expected.numpy(), rtol=1e-4, atol=1e-5)
  options = dict(steps=2, step_size=0.5, normalize="l2")
  ours = backward.token_auxiliary_embeddings(
      lambda e: teacher.apply({"params": t_params}, None, types, mask, word_embeddings=e),
      lambda e: student.apply({"params": s_params}, None, types, mask, word_embeddings=e),
      t_params["word_embeddings"], s_params["word_embeddings"], ids, perturb, **options)
  theirs = text_steps.token_auxiliary_embeddings(t_hf, s_hf, _t(ids), _t(types), _t(mask),
                                                 torch.from_numpy(perturb).float(), **options)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method_name", ["backward_kd", "continuation_kd"])
def test_text_steps_match_pytorch_adamw(method_name):
  (teacher, t_params, t_hf), (student, s_params, s_hf) = _models()
  ids, types, mask, perturb = _batch()
  labels = np.array([1, 2], np.int32)
  hp = dict(temperature=2.0, ce_weight=0.5, kd_weight=0.5, view_weight=1.0, phi=0.6, psi=0.3,
            margin=0.2)
  method = methods.get_method(method_name)
  optimizer, _ = optim.make_optimizer(name="adamw", learning_rate=1e-2, weight_decay=0.01,
                                      warmup_fraction=0.5, steps_per_epoch=4, num_epochs=1)
  view = (methods.make_view("backward", "text", steps=1, step_size=0.5, normalize="l2",
                            special_ids=(0, 2, 3)) if method.view else None)
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  teacher_model, student_model = adapters.BertModel(teacher), adapters.BertModel(student)
  step = step_lib.jit_data_parallel(step_lib.make_train_step(
      student_model, optimizer, method, TextPreprocess(), teacher=teacher_model, view=view),
      mesh)
  teacher_variables = {"params": t_params, "batch_stats": {}}
  constants = backward_kd.teacher_constants(teacher_model, teacher_variables) if view else {}
  state = {"step": jnp.zeros((), jnp.int32), "params": s_params, "batch_stats": {},
           "opt_state": optimizer.init(s_params), "rng": jax.random.PRNGKey(0)}
  batch = sharding.global_batch({"input_ids": ids, "token_type_ids": types,
                                 "attention_mask": mask, "label": labels}, mesh)
  losses = []
  for _ in range(2):  # the second step has a non-zero learning rate (warm-up starts at 0)
    state, metrics = step(state, batch, teacher_variables,
                          {k: jnp.float32(v) for k, v in hp.items()}, constants)
    losses.append(float(metrics["loss"]))

  torch_opt, scheduler = text_steps.make_adamw(s_hf, learning_rate=1e-2, weight_decay=0.01,
                                               warmup_fraction=0.5, total_steps=4)
  for expected in losses:
    loss = text_steps.text_kd_step(s_hf, t_hf, torch_opt, scheduler, _t(ids), _t(types),
                                   _t(mask), _t(labels), torch.from_numpy(perturb).float(),
                                   hparams=hp,
                                   objective=torch_steps.OBJECTIVE_OF_METHOD[method_name],
                                   backward_options=(dict(steps=1, step_size=0.5)
                                                     if method.view == "backward" else None))
    assert loss == pytest.approx(expected, rel=1e-4)
  back = {k: v.detach().numpy() for k, v in s_hf.state_dict().items()}
  ours = bert.params_to_hf(state["params"], STUDENT)
  for key, value in ours.items():
    np.testing.assert_allclose(value, back[f"bert.{key}"], rtol=1e-4, atol=1e-5, err_msg=key)
  np.testing.assert_allclose(np.asarray(state["params"]["classifier"]["kernel"]).T,
                             back["classifier.weight"], rtol=1e-4, atol=1e-5)
