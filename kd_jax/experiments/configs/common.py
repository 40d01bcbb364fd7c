"""The default config every run starts from; each config file overrides what it needs.

Keys (all overridable on the command line as ``--config.key=value``):
  dataset, data_dir, download   which data (see kd_jax.data.DATASET_NAMES); data_dir None
                                means TFDS's default; download lets TFDS fetch it.
  model                         student (or teacher) architecture, kd_jax.models.MODEL_NAMES.
  method                        "ce" (teacher / scratch) or a distillation method.
  teacher_workdir               run directory of the frozen teacher (methods with a teacher).
  teacher_checkpoint, teacher_model   or the teacher from a PyTorch file and the kd_jax model
                                it holds (kd_jax.models.from_pytorch); its top-1 on the
                                evaluation split is logged before training.
  seed                          initialisation, sampler order and augmentation randomness.
  num_epochs, batch_size, eval_batch_size
  dtype                         compute dtype, "float32" or "bfloat16" (parameters stay f32).
  input.image_size, input.workers, input.prefetch, input.jpeg_draft, input.cache,
  input.cache_limit_gb          how streamed images are read: square size (0: the dataset's),
                                decoding threads, batches read ahead, JPEG draft decoding
                                (kd_jax.data.images), decoded once into memory or per batch
                                (kd_jax.data.streamed). workers, prefetch and the cache never
                                change a result.
  augment.crop_pad, augment.flip   standard view: zero-pad + random crop, horizontal flip;
  augment.autoaugment, augment.cutout_size   then an AutoAugment policy ("cifar10" |
                                "imagenet"; "" none) and Cutout (pixels; 0 none), per image.
  augment.randaugment_ops, augment.randaugment_magnitude   or RandAugment: N operations
                                (0 none) at magnitude bin M of 31 (torchvision's 2, 9).
  optimizer.*                   name "sgd": momentum, weight decay, multi-step lr schedule
                                (lr_milestones, lr_decay); "adamw": weight_decay, linear
                                warm-up over warmup_fraction of the steps, then linear decay;
                                "adam": L2 weight_decay on kernels, adam_eps, the multi-step
                                schedule (role-kd). clip_global_norm (any; None = off).
                                The ImageNet recipes' options, any optimiser
                                (kd_jax.train.optim): schedule ("" the optimiser's own |
                                "step" | "cosine" | "linear"), warmup_epochs (linear warm-up
                                of the step and cosine schedules), decay_norm_and_bias (None
                                the optimiser's own | True | False: weight decay on BatchNorm
                                parameters and biases), lr_reference_batch (0 | N: lr ×
                                global batch / N).
  label_smoothing               ε: the hard-label cross-entropy of every method is taken
                                against (1 − ε)·one-hot + ε/C (0 = none; 0.1 in ImageNet
                                recipes); the teacher terms are unchanged.
  kd.temperature, kd.ce_weight, kd.kd_weight   Hinton KD (explicit weights, no "alpha").
  view.name, view.weight         "" = the method's own view, or a view to combine with the
                                method's objective (e.g. continuation_kd with cutmix_pick);
                                weight of the KD term on the view x'.
  view.joint_pass               x and x' through the student in one concatenated forward pass
                                (True; BatchNorm normalises them together) or two (False, as
                                Wang et al.'s official code); None = the model's default
                                (image models one, text models two).
  identity, flip.*, crop_flip.*, cutout.*, autoaugment.*   the other views of Wang et al.'s
                                study (view.name): flip per_image; crop_flip pad, flip,
                                per_image; cutout size, per_image; autoaugment policy
                                ("cifar10" | "imagenet"), fill (pixel value), per_image.
                                per_image False: one draw per batch, as the official code.
  randaugment.*                 RandAugment view: num_ops N, magnitude M (a bin of ``bins``),
                                random_magnitude, fill, per_image.
  dual.*                        weak/strong dual view (mlkd's): strong (a view name, set by
                                its own block), cutout_size after it, term ("objective": the
                                method's objective on x' too | "kd": the KD term).
  mlkd.*                        mlkd: extra_temperatures (next to kd.temperature), mask
                                ("fraction" | "per_example" | "none"), correlation_weight
                                (of the batch and class terms; 1 official).
  kd.standardize                logit standardisation in every KD term (τ: a base, 2); the
                                continuation hinge and regression KD keep raw outputs.
  mixup.*, cutmix.*             the views of kd_mixup / kd_cutmix: alpha (Beta parameter),
                                label_mixing (add the mixed-label CE on x').
  cutmix_pick.*                 kd_cutmix_pick: alpha, pool_rounds R, score
                                ("teacher_entropy" | "student_entropy" | "kl"), n_pick
                                (None = batch size), label_mixing.
  backward.*                    backward_kd: steps K, step_size eta, normalize ("sign" | "l2" |
                                "none"), epsilon (ball radius, None = none), clip (to valid
                                pixels), divergence ("kl" | "l1" | "mse"),
                                divergence_temperature, pool_every_epochs (0 = new samples
                                every step; N = samples for the whole training set,
                                regenerated every N epochs; images only).
  epoch_factor                  multiplies num_epochs and the lr milestones (longer training).
  continuation.*                Continuation-KD / Annealing-KD: t_max, reduction of the hinge
                                over classes ("mean" | "sum"), margin m, psi_schedule
                                ("linear" | "piecewise" | "step"), psi_ramp_epochs and
                                psi_switch_epoch (piecewise: end of the ramp; annealing: the
                                switch to labels, None = when T reaches 1),
                                annealing_phase2_epochs N (> 0: Annealing-KD's official two
                                phases, the last N epochs labels only with a fresh optimiser
                                whose lr schedule restarts) and annealing_phase2_init
                                ("last" | "best": phase 1's epoch phase 2 starts from).
  dkd.*                         Decoupled KD: ce_weight, alpha (TCKD), beta (NCKD),
                                warmup_epochs of the DKD term (0: none).
  checkpoint_every_steps        0 = at the end of every epoch.
  allow_config_change           rerunning a command resumes its workdir; a config that would
                                change the run's result (another method, lr, seed, ...) is
                                refused with the keys named, unless this is True. num_epochs
                                (a longer run) only warns; teacher_workdir may move, as the
                                teacher itself is compared by the checksum of its parameters.
  max_checkpoints_to_keep, log_every_steps, progress_bar
  multihost                     call jax.distributed.initialize() first (multi-host jobs);
  coordinator_address, num_processes, process_id   its arguments when the cluster's
                                environment does not provide them (None: auto-detect).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "cifar100"
  config.data_dir = placeholder(str)  # None: TFDS's default directory
  config.download = False
  config.model = "resnet20"
  config.method = "ce"
  config.teacher_workdir = ""
  # Or a teacher from a PyTorch file (safetensors or .pth: kd_jax.models.from_pytorch) and
  # the kd_jax model it holds, e.g. torchvision's ResNet-34 as "imagenet_resnet34".
  config.teacher_checkpoint = ""
  config.teacher_model = ""
  config.seed = 0
  config.num_epochs = 240
  config.batch_size = 64
  config.eval_batch_size = 256
  config.dtype = "float32"

  # How the host reads the data (kd_jax.data.open_images). image_size: the square size
  # streamed images are cropped to (0: the dataset's, e.g. 224 for ImageNet); workers:
  # threads that decode streamed records; prefetch: batches read and put on the devices
  # ahead of the step; jpeg_draft: let the JPEG decoder downscale (faster, kd_jax.data.images);
  # cache: "auto" | "memory" | "stream", decode a split once into host memory where that
  # gives the same batches and it fits in cache_limit_gb (kd_jax.data.streamed).
  config.input = ml_collections.ConfigDict()
  config.input.image_size = 0
  config.input.workers = 2
  config.input.prefetch = 2
  config.input.jpeg_draft = False
  config.input.cache = "auto"
  config.input.cache_limit_gb = 4.0

  config.augment = ml_collections.ConfigDict()
  config.augment.crop_pad = 4
  config.augment.flip = True
  # 0: no Cutout (16 on CIFAR-10, 8 on CIFAR-100 with it); role-wise's PBA pipeline reads the
  # same key for the same stage (Cutout after crop and flip).
  config.augment.cutout_size = 0
  config.augment.autoaugment = ""  # "" | "cifar10" | "imagenet"
  # RandAugment (Cubuk et al. 2020) instead: N operations (0: none) at bin M of 31.
  config.augment.randaugment_ops = 0
  config.augment.randaugment_magnitude = 9

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.lr_milestones = (150, 180, 210)
  config.optimizer.lr_decay = 0.1
  config.optimizer.warmup_fraction = 0.1  # adamw only
  config.optimizer.adam_eps = 1e-5  # adam only
  config.optimizer.clip_global_norm = ml_collections.config_dict.placeholder(float)  # None: off
  config.optimizer.schedule = ""  # "": sgd / adam "step", adamw "linear"
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.decay_norm_and_bias = ml_collections.config_dict.placeholder(bool)
  config.optimizer.lr_reference_batch = 0
  config.label_smoothing = 0.0

  config.kd = ml_collections.ConfigDict()
  config.kd.temperature = 4.0
  config.kd.ce_weight = 0.1
  config.kd.kd_weight = 0.9
  # Logit standardisation (Sun et al., CVPR 2024) in every KD term (x, the view x', DKD,
  # MLKD): z-score each example's logits first; τ is then a base temperature (2 in the paper).
  config.kd.standardize = False

  # Which extra view x' (read by kd_jax.methods.get_method) and the weight of its KD term.
  config.view = ml_collections.ConfigDict()
  config.view.name = ""
  config.view.weight = 1.0
  # x and x' through the student in one concatenated pass (BatchNorm statistics over both)
  # or two passes (Wang et al.'s official code); None: the model's default (images one, text
  # two: kd_jax.models.adapters).
  config.view.joint_pass = placeholder(bool)
  # One block per view, named after it and read by its factory (kd_jax.methods.make_view).
  # The schemes of Wang et al.'s study: x' = x, a flip, a crop+flip, Cutout or AutoAugment
  # of x; per_image False draws once per batch, as the official code.
  config.identity = ml_collections.ConfigDict()
  config.flip = ml_collections.ConfigDict()
  config.flip.per_image = True
  config.crop_flip = ml_collections.ConfigDict()
  config.crop_flip.pad = 4
  config.crop_flip.flip = True
  config.crop_flip.per_image = True
  config.cutout = ml_collections.ConfigDict()
  config.cutout.size = 8
  config.cutout.per_image = True
  config.autoaugment = ml_collections.ConfigDict()
  config.autoaugment.policy = "cifar10"
  config.autoaugment.fill = 0.0
  config.autoaugment.per_image = True
  # RandAugment as a view (x' = RandAugment(x)) and as the dual view's default strong view.
  config.randaugment = ml_collections.ConfigDict()
  config.randaugment.num_ops = 2
  config.randaugment.magnitude = 9  # a bin of 31, torchvision's default
  config.randaugment.bins = 31
  config.randaugment.random_magnitude = False  # True: a bin from 0..magnitude per operation
  config.randaugment.fill = 0.0
  config.randaugment.per_image = True
  # The weak/strong dual view (mlkd's own): x' = the strong view (a view name, configured by
  # its own block) then Cutout; term "objective": the method's objective on x' as on x
  # (CE and KD on both views), "kd": the KD term alone.
  config.dual = ml_collections.ConfigDict()
  config.dual.strong = "randaugment"
  config.dual.cutout_size = 8  # 0: none; the official strong view cuts up to half the side
  config.dual.term = "objective"
  config.mixup = ml_collections.ConfigDict()
  config.mixup.alpha = 1.0
  config.mixup.label_mixing = False
  config.cutmix = ml_collections.ConfigDict()
  config.cutmix.alpha = 1.0
  config.cutmix.label_mixing = False
  config.cutmix_pick = ml_collections.ConfigDict()
  config.cutmix_pick.alpha = 1.0
  config.cutmix_pick.pool_rounds = 2
  config.cutmix_pick.score = "teacher_entropy"
  config.cutmix_pick.n_pick = placeholder(int)  # None: the batch size
  config.cutmix_pick.label_mixing = False
  # Backward-pass KD: K steps of size eta along the normalised gradient.
  config.backward = ml_collections.ConfigDict()
  config.backward.steps = 1
  config.backward.step_size = 0.03  # chosen by results/sweep_backward_step_digits.md
  config.backward.normalize = "sign"
  config.backward.epsilon = placeholder(float)  # None: no ε-ball
  config.backward.clip = True
  config.backward.divergence = "kl"
  # τ of the generation KL: 1, not the KD τ (within noise of 4:
  # results/sweep_backward_divergence_temperature_digits.md).
  config.backward.divergence_temperature = 1.0
  config.backward.pool_every_epochs = 0  # 0: regenerate every step; N: a pool every N epochs
  config.epoch_factor = 1

  config.continuation = ml_collections.ConfigDict()
  config.continuation.t_max = 20
  # The hinge's reduction over classes: "sum" (the Continuation-KD paper's squared norm, Eq.
  # 4) or "mean" (Annealing-KD's official MSE: C times weaker next to CE, so it needs a
  # larger lr); chosen by results/sweep_continuation_kd_reduction_lr_digits.md.
  config.continuation.reduction = "sum"
  config.continuation.margin = 3.0  # summed scale: results/sweep_continuation_margin_digits.md
  config.continuation.psi_schedule = "linear"
  config.continuation.psi_ramp_epochs = 150
  config.continuation.psi_switch_epoch = placeholder(int)
  # Annealing-KD's official two phases: the last N epochs are phase 2 (labels only, a fresh
  # optimiser, from phase 1's last or best epoch); 0 keeps one run that switches to labels
  # when T reaches 1.
  config.continuation.annealing_phase2_epochs = 0
  config.continuation.annealing_phase2_init = "last"

  # Decoupled KD (--config.method=dkd, kd_jax.methods.dkd): ce_weight·CE + w·(α·TCKD +
  # β·NCKD) at kd.temperature, w ramping linearly to 1 over warmup_epochs; the official
  # CIFAR-100 setting (mdistiller), whose CE weight 1.0 replaces kd.ce_weight for this method.
  config.dkd = ml_collections.ConfigDict()
  config.dkd.ce_weight = 1.0
  config.dkd.alpha = 1.0
  config.dkd.beta = 8.0
  config.dkd.warmup_epochs = 20

  # Multi-level logit KD (--config.method=mlkd, kd_jax.methods.mlkd): instance, batch and
  # class terms at kd.temperature and these, with the official code's confidence masks
  # ("fraction": a ≈1/2 factor, its effect; "per_example": selecting; "none"). The weights
  # are the kd block's (CE 0.1, KD 0.9: the official setting).
  config.mlkd = ml_collections.ConfigDict()
  config.mlkd.extra_temperatures = (3.0, 5.0, 2.0, 6.0)
  config.mlkd.mask = "fraction"
  # Weight of the batch and class terms (1: official). They grow with (batch / classes):
  # digits.py uses 0.01 (results/sweep_mlkd_correlation_weight_digits.md).
  config.mlkd.correlation_weight = 1.0

  config.checkpoint_every_steps = 0
  config.allow_config_change = False  # resume a workdir whose checkpoint has another config
  config.max_checkpoints_to_keep = 3
  config.log_every_steps = 100
  config.progress_bar = True
  config.multihost = False
  config.coordinator_address = placeholder(str)  # None: from the cluster's environment
  config.num_processes = placeholder(int)
  config.process_id = placeholder(int)
  return config
